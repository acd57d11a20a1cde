import ArgumentParser
import Engine
import Model
#if canImport(Glibc)
import Glibc
#endif

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with the model in the terminal; it remembers the conversation.",
        discussion: """
            Type a message and press Enter; the reply is written as it is generated. Every turn the whole \
            conversation goes to the model again through its chat template; when it no longer fits in the context \
            (--max-context), the oldest turns are forgotten and a note says so.

            Commands: /reset forgets the conversation, /quit (or Ctrl-D) leaves.

            Standard input can be a pipe: each line is one message, each reply is written to standard output \
            followed by a newline, and notes go to standard error — e.g.
              printf 'Name a colour.\\nWhy that one?\\n' | vattn chat --temperature 0
            """)

    @OptionGroup var options: ModelOptions
    @Option(help: "A system prompt: instructions the model sees before the conversation (default: the model's own).")
    var system: String?
    @Option(help: "Longest reply, tokens. This much of the context is kept free for the reply.")
    var maxTokens = 256
    @OptionGroup var sampling: SamplingOptions
    @Flag(help: "Print the whole prompt the model gets each turn (history included) to standard error.")
    var showPrompt = false

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1") }
        guard maxTokens + 16 <= options.maxContext else {
            throw ValidationError("--max-tokens \(maxTokens) leaves no room for the conversation in a context of "
                                  + "\(options.maxContext) tokens: lower it or raise --max-context")
        }
    }

    func run() throws {
        let (engine, loaded) = try options.makeEngine()
        let template = try loaded.chatTemplate()
        let tokenizer = try loaded.requireTokenizer(for: "chat")
        let interactive = isatty(0) == 1
        var conversation = Conversation(system: system)
        let limit = options.maxContext - maxTokens
        if interactive {
            printErr("Chatting with \(options.model) (context \(options.maxContext) tokens). /reset forgets, /quit or Ctrl-D leaves.")
        }
        var turn = 0
        while true {
            if interactive { writeOut("\nyou> ") }
            guard let line = readLine(strippingNewline: true) else { break }
            let message = trimmed(line)
            if message.isEmpty { continue }
            switch message {
            case "/quit", "/exit": return
            case "/reset":
                conversation.reset()
                printErr("[conversation forgotten]")
                continue
            default:
                if message.hasPrefix("/") {
                    printErr("[unknown command \(message): /reset forgets the conversation, /quit leaves]")
                    continue
                }
            }
            let prompt: Conversation.Prompt
            do {
                prompt = try conversation.prompt(for: message, template: template, tokenizer: tokenizer,
                                                 limit: limit)
            } catch {
                printErr("[\(error); not sent]")
                continue
            }
            if prompt.droppedTurns > 0 {
                printErr("[the conversation outgrew the context of \(options.maxContext) tokens: forgot the oldest "
                         + "\(prompt.droppedTurns) turn\(prompt.droppedTurns == 1 ? "" : "s")]")
            }
            if showPrompt { printErr("[prompt, \(prompt.tokens.count) tokens]\n\(prompt.text)\n[end of prompt]") }
            turn += 1
            // A fixed seed still varies by turn, or every turn would draw the same random numbers.
            let parameters = sampling.parameters(maxTokens: maxTokens, seedOffset: UInt64(turn))
            if interactive { writeOut("\nbot> ") }
            let start = nowNanos()
            let id = try engine.add(prompt: prompt.tokens, parameters: parameters)
            try engine.runToCompletion { writeOut($0.text) }
            writeOut("\n")
            let reply = engine.text(of: id) ?? ""
            let tokens = engine.output(of: id)?.count ?? 0
            let finish = engine.finishReason(of: id)
            engine.remove(id)
            conversation.append(user: message, assistant: reply)
            let seconds = Double(nowNanos() - start) / 1e9
            printErr("[\(tokens) tokens in \(fmt(seconds, 1)) s, prompt \(prompt.tokens.count) tokens, "
                     + "history \(conversation.turns.count) turn\(conversation.turns.count == 1 ? "" : "s")"
                     + (finish == .length ? "; cut at --max-tokens \(maxTokens)" : "") + "]")
        }
        if interactive { writeOut("\n") }
    }
}

/// `s` without leading and trailing white space (a pasted line often has some).
private func trimmed(_ s: String) -> String {
    var sub = Substring(s)
    while let c = sub.first, c.isWhitespace { sub = sub.dropFirst() }
    while let c = sub.last, c.isWhitespace { sub = sub.dropLast() }
    return String(sub)
}
