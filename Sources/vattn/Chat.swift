import ArgumentParser
import Engine
import Model
import Support
import Synchronization
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

            Commands: /reset forgets the conversation, /quit (or Ctrl-D) leaves. Ctrl-C stops the reply being \
            written (what was written stays in the conversation); a second Ctrl-C before it stops, or Ctrl-C at the \
            prompt, leaves.

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
        let built = try options.engineBuilder().build()
        let (engine, loaded) = (built.engine, built.model)
        let template = try loaded.chatTemplate()
        let tokenizer = try loaded.requireTokenizer(for: "chat")
        let interactive = isatty(0) == 1
        var conversation = Conversation(system: system)
        // The context the engine really has (the model's, or the KV pool's, may have lowered --max-context).
        let context = engine.maxContext
        guard maxTokens + 16 <= context else {
            throw ValidationErrorText("--max-tokens \(maxTokens) leaves no room for the conversation in a context of "
                                      + "\(context) tokens: lower it or raise --max-context")
        }
        let limit = context - maxTokens
        if interactive {
            printErr("Chatting with \(options.model) (context \(context) tokens). /reset forgets, /quit or Ctrl-D leaves, "
                     + "Ctrl-C stops a reply.")
        }
        ChatInterrupt.install()
        var input = InterruptibleLines(fd: 0)
        var turn = 0
        while true {
            if interactive { writeOut("\nyou> ") }
            ChatInterrupt.atPrompt()
            let line = input.next(interrupted: { ChatInterrupt.hasPending })
            if ChatInterrupt.takePending() {  // Ctrl-C at the prompt: leave
                printErr("\n[Ctrl-C: bye]")
                return
            }
            guard let line else { break }
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
                printErr("[the conversation outgrew the context of \(context) tokens: forgot the oldest "
                         + "\(prompt.droppedTurns) turn\(prompt.droppedTurns == 1 ? "" : "s")]")
            }
            if showPrompt { printErr("[prompt, \(prompt.tokens.count) tokens]\n\(prompt.text)\n[end of prompt]") }
            turn += 1
            // A fixed seed still varies by turn, or every turn would draw the same random numbers.
            let parameters = sampling.parameters(maxTokens: maxTokens, seedOffset: UInt64(turn))
            if interactive { writeOut("\nbot> ") }
            let start = monotonicNanos()
            let id = try engine.add(prompt: prompt.tokens, parameters: parameters)
            ChatInterrupt.replying()
            var stopped = false
            while engine.hasWork {
                if ChatInterrupt.takePending() {
                    try engine.cancel(id)
                    stopped = true
                    break
                }
                for event in try engine.step() { writeOut(event.text) }
            }
            if ChatInterrupt.takePending() {
                // After the last step: a second Ctrl-C if this reply was already stopped; else the reply had ended.
                if stopped {
                    printErr("\n[Ctrl-C twice: bye]")
                    _exit(130)  // as the handler does: no atexit handlers under the model's threads
                }
                stopped = true
            }
            ChatInterrupt.atPrompt()
            writeOut("\n")
            if stopped { printErr("[stopped by Ctrl-C]") }
            let reply = engine.text(of: id) ?? ""
            let tokens = engine.output(of: id)?.count ?? 0
            let finish = engine.finishReason(of: id)
            engine.remove(id)
            conversation.append(user: message, assistant: reply)
            let seconds = Double(monotonicNanos() - start) / 1e9
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

/// Lines of a file descriptor, read so that a Ctrl-C is seen at once whichever thread the kernel delivered it to: the
/// reader waits in `poll` with a short timeout and asks `interrupted` between waits (a signal taken by a model worker
/// thread does not interrupt a blocking `read` on the main thread).
struct InterruptibleLines {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var atEnd = false

    init(fd: Int32) { self.fd = fd }

    /// The next line without its newline; nil at the end of input or when `interrupted()` turns true.
    mutating func next(interrupted: () -> Bool) -> String? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            if atEnd {
                guard !buffer.isEmpty else { return nil }
                defer { buffer.removeAll() }
                return String(decoding: buffer, as: UTF8.self)
            }
            if interrupted() { return nil }
            var waiter = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&waiter, 1, 100)
            if ready <= 0 { continue }  // timeout or EINTR: look at `interrupted` again
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                buffer.append(contentsOf: chunk[..<n])
            } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                atEnd = true
            }
        }
    }
}

/// Ctrl-C in `vattn chat`. The handler only counts (async-signal-safe); the chat loop looks between engine steps and
/// the prompt's reader between waits. The first Ctrl-C during a reply stops the reply; a second one before the loop
/// has seen the first exits at once; Ctrl-C at the prompt leaves.
enum ChatInterrupt {
    /// Ctrl-Cs not yet handled by the loop.
    static let pending = Atomic<Int>(0)
    /// 1 while a reply is being generated.
    static let inReply = Atomic<Int>(0)

    static func install() {
        _ = pending.load(ordering: .relaxed)  // initialise the globals now, never first in the handler
        _ = inReply.load(ordering: .relaxed)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in
            let n = ChatInterrupt.pending.add(1, ordering: .sequentiallyConsistent).newValue
            if n >= 2 && ChatInterrupt.inReply.load(ordering: .sequentiallyConsistent) == 1 {
                let message = "\n[Ctrl-C twice: bye]\n"
                _ = message.withCString { Glibc.write(2, $0, strlen($0)) }
                _exit(130)
            }
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(SIGINT, &action, nil)
    }

    static func replying() { inReply.store(1, ordering: .sequentiallyConsistent) }
    static func atPrompt() { inReply.store(0, ordering: .sequentiallyConsistent) }
    /// Whether a Ctrl-C came that the loop has not taken yet.
    static var hasPending: Bool { pending.load(ordering: .sequentiallyConsistent) > 0 }
    /// Whether a Ctrl-C came since the last call (and forgets it).
    static func takePending() -> Bool { pending.exchange(0, ordering: .sequentiallyConsistent) > 0 }
}
