import ArgumentParser
import Engine
import Model
import Support
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
    @OptionGroup var sampling: SamplingOptions
    @Option(help: "Stop before this string (repeatable).")
    var stop: [String] = []

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
    }

    func run() throws {
        let builder = options.engineBuilder()
        let loaded = try builder.loadModel()
        let tokenizer = try loaded.requireTokenizer(for: "generate")
        let engine = try builder.build(loaded).engine
        // The prompt is the user's text either way: with the template, only the template's markup has control tokens.
        let tokens = raw ? tokenizer.encode(prompt, addSpecial: true, parseSpecial: false)
            : try loaded.chatTemplate().encode([.user(prompt)], addGenerationPrompt: true, tokenizer: tokenizer)
        let parameters = sampling.parameters(maxTokens: maxTokens, stop: stop)
        let start = monotonicNanos()
        var firstToken: UInt64?
        let id = try engine.add(prompt: tokens, parameters: parameters)
        try engine.runToCompletion { event in
            if firstToken == nil { firstToken = monotonicNanos() }
            writeOut(event.text)
        }
        let end = monotonicNanos()
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
            print("\nShapes for --dummy-weights --model <shape> (seeded random weights, no tokenizer):")
            for (name, hp) in DummyWeights.knownShapes {
                let params = Double(hp.parameterCount) / 1e9
                print("\(name)\t\(hp.blockCount) layers, hidden \(hp.embeddingLength), \(hp.headCount)/\(hp.headCountKV) heads "
                      + "× \(hp.headDim), FFN \(hp.feedForwardLength), vocab \(hp.vocabSize), \(fmt(params, 2))B parameters")
            }
            print("Also: --model <HF directory> (config.json + safetensors), with or without --dummy-weights.")
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
