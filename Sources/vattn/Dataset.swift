import ArgumentParser
import Model

/// Where a serving benchmark's requests come from: the real ShareGPT trace (`--dataset sharegpt[:PATH]`), sampled
/// as vLLM's benchmark samples it, or a synthetic workload.
struct DatasetOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The ShareGPT V3 trace vLLM benchmarks with: `sharegpt` (the file scripts/fixtures/fetch_sharegpt.sh puts in "
            + "~/.cache/vattn/datasets, or $VATTN_DATA_DIR) or `sharegpt:PATH`. Sampled like vLLM's benchmark: seeded "
            + "shuffle, first human turn = prompt, its reply's token count = output length (EOS ignored), pairs with "
            + "fewer than 4 tokens on either side, prompts over 1024 tokens or prompt + output over 2048 (or the "
            + "context) dropped.", valueName: "sharegpt[:path]"))
    var dataset: String?
    @Option(help: "Tokenizer for --dataset when the model has none (dummy weights): a known model name or a .gguf file. Its token ids are the prompts; its counts the lengths.")
    var datasetTokenizer = ModelStore.defaultModel
    @Option(help: "Number of requests.")
    var requests = 32
    @Option(help: "Random seed of the sampling (the same seed gives the same requests).")
    var seed: UInt64 = 0

    func validate() throws {
        guard requests >= 1 else { throw ValidationError("--requests must be at least 1, got \(requests)") }
        if let d = dataset, d != "sharegpt", !d.hasPrefix("sharegpt:") {
            throw ValidationError("--dataset takes sharegpt or sharegpt:PATH, got '\(d)'")
        }
    }

    /// The sampled requests and a line saying where they came from (file, records, which tokenizer gave the
    /// lengths); nil when no --dataset was given.
    func loadTrace(modelTokenizer: Tokenizer?, maxContext: Int) throws -> (requests: [TraceRequest], source: String)? {
        guard let d = dataset else { return nil }
        let path = d.hasPrefix("sharegpt:") ? String(d.dropFirst("sharegpt:".count)) : ShareGPTDataset.defaultPath()
        let data: ShareGPTDataset
        do { data = try ShareGPTDataset(path: path) } catch {
            throw ValidationErrorText("--dataset \(d): cannot read \(path) (\(error)); fetch it with "
                                      + "scripts/fixtures/fetch_sharegpt.sh or give sharegpt:PATH")
        }
        let tokenizer: Tokenizer
        let tokenizerName: String
        if let modelTokenizer {
            (tokenizer, tokenizerName) = (modelTokenizer, "the model's")
        } else {
            tokenizer = try loadTokenizer(datasetTokenizer)
            tokenizerName = "\(datasetTokenizer)'s (the model has none)"
        }
        var limits = ShareGPTDataset.Limits()
        limits.maxTotal = min(limits.maxTotal, maxContext)
        limits.maxPrompt = min(limits.maxPrompt, maxContext - 1)
        let (sampled, examined) = data.sample(count: requests, seed: seed, tokenizer: tokenizer, limits: limits)
        guard !sampled.isEmpty else { throw ValidationErrorText("--dataset \(d): no request fits the limits") }
        let source = "ShareGPT \(path): \(data.summary); \(sampled.count) requests sampled (seed \(seed)) of "
            + "\(examined) examined; lengths by \(tokenizerName) tokenizer"
        return (sampled, source)
    }
}

/// A tokenizer by known model name (fetched on first use) or .gguf path.
func loadTokenizer(_ nameOrPath: String) throws -> Tokenizer {
    let path: String
    if nameOrPath.hasSuffix(".gguf") {
        path = nameOrPath
    } else {
        let store = ModelStore()
        if let p = try store.locate(nameOrPath) { path = p } else {
            printErr("\(nameOrPath) is not in \(ModelStore.defaultDirectory()) yet: fetching it")
            path = try store.pull(nameOrPath) { printErr("  " + $0) }
        }
    }
    return try Tokenizer(file: try GGUFFile(path: path))
}

struct BenchTrace: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Samples a serving trace from --dataset and writes it as JSON lines (the input of bench/http/loadgen.py).",
        discussion: """
            Each line is {"prompt_token_ids": [...], "output_len": N}. The sampling is `vattn bench serve \
            --dataset`'s, so with the same dataset, seed, count, tokenizer and context the offline benchmark and an \
            HTTP run over `vattn serve` see exactly the same requests.
            """)

    @OptionGroup var data: DatasetOptions
    @Option(help: "Tokenizer of the model that will serve the trace: a known model name or a .gguf file (for a dummy-weight model, the --dataset-tokenizer its server bench uses).")
    var tokenizer = ModelStore.defaultModel
    @Option(help: "Longest prompt + output, tokens (the server's --max-context).")
    var maxContext = 2048
    @Option(help: "Where to write the trace.")
    var out: String

    func validate() throws {
        if data.dataset == nil { throw ValidationError("--dataset is required") }
    }

    func run() throws {
        guard let (requests, source) = try data.loadTrace(modelTokenizer: try loadTokenizer(tokenizer),
                                                          maxContext: maxContext) else { return }
        var text = ""
        for r in requests {
            text += "{\"prompt_token_ids\": [" + r.prompt.map { String($0) }.joined(separator: ", ")
                + "], \"output_len\": \(r.outputLength)}\n"
        }
        try writeText(text, to: out)
        let input = requests.reduce(0) { $0 + $1.prompt.count }, output = requests.reduce(0) { $0 + $1.outputLength }
        printErr(source)
        printErr("wrote \(out): \(requests.count) requests, \(input) prompt tokens, \(output) output tokens")
    }
}
