import ArgumentParser
import Engine
import Model
import VAttention
#if canImport(Glibc)
import Glibc
#endif

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text for a prompt, streaming it to the terminal.",
        discussion: "By default the prompt is sent as a user message through the model's chat template; --raw sends it as is.")

    @OptionGroup var options: ModelOptions
    @Argument(help: "The prompt.")
    var prompt: String
    @Flag(help: "Do not apply the chat template.")
    var raw = false
    @Option(help: "Most tokens to generate.")
    var maxTokens = 200
    @Option(help: "Sampling temperature (0 = greedy).")
    var temperature: Float = 0.7
    @Option(help: "Nucleus sampling: smallest set of tokens whose probability reaches this.")
    var topP: Float = 0.95
    @Option(help: "Keep only the k most likely tokens (0 = all).")
    var topK = 40
    @Option(help: "Random seed (same seed, same text).")
    var seed: UInt64?
    @Option(help: "Stop before this string (repeatable).")
    var stop: [String] = []

    func run() throws {
        let (engine, file) = try options.makeEngine()
        let text = raw ? prompt : try ChatTemplate(file: file).render([.user(prompt)], addGenerationPrompt: true)
        let tokens = try engine.requireTokenizer().encode(text, addSpecial: raw, parseSpecial: !raw)
        let parameters = SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: seed,
                                            maxTokens: maxTokens, stop: stop)
        let start = nowNanos()
        var firstToken: UInt64?
        let id = try engine.add(prompt: tokens, parameters: parameters)
        try engine.runToCompletion { event in
            if firstToken == nil { firstToken = nowNanos() }
            writeOut(event.text)
        }
        let end = nowNanos()
        let generated = engine.output(of: id)?.count ?? 0
        let decodeSeconds = Double(end - (firstToken ?? end)) / 1e9
        let memory = engine.kv.memory
        printErr("\n\n[\(generated) tokens, finish: \(engine.finishReason(of: id)?.rawValue ?? "?"); prompt \(tokens.count) tokens, "
                 + "first token after \(fmt(Double((firstToken ?? end) - start) / 1e6, 0)) ms; "
                 + "\(fmt(Double(max(generated - 1, 0)) / max(decodeSeconds, 1e-9), 1)) tok/s after it; "
                 + "KV \(engine.kv.name): mapped \(formatBytes(memory.mappedBytes)) of \(formatBytes(memory.reservedBytes)) reserved]")
    }
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List or fetch the models vattn knows by name.", subcommands: [List.self, Pull.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Known models and whether they are downloaded.")
        func run() throws {
            let store = ModelStore()
            for (name, spec) in ModelStore.known.sorted(by: { $0.key < $1.key }) {
                let where_ = try store.locate(name) ?? "not downloaded (vattn models pull \(name))"
                print("\(name)\t\(spec.fileName)\t\(where_)")
            }
        }
    }

    struct Pull: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Download a model into the cache and verify it.")
        @Argument(help: "Model name.") var name = ModelStore.defaultModel
        func run() throws {
            let path = try ModelStore().pull(name) { print($0) }
            print(path)
        }
    }
}
