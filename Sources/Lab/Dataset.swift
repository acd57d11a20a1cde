import Model
import Support

/// Where a serving benchmark's requests come from: the real ShareGPT trace (`dataset` "sharegpt" or
/// "sharegpt:PATH"), sampled as vLLM's benchmark samples it, or (nil) a synthetic workload.
public struct DatasetSelection: Sendable {
    /// "sharegpt" (the file scripts/fixtures/fetch_sharegpt.sh puts in ~/.cache/vattn/datasets, or
    /// $VATTN_DATA_DIR) or "sharegpt:PATH"; nil: no trace.
    public var dataset: String?
    /// Tokenizer for the trace when the model has none (dummy weights): a known model name or a .gguf file.
    public var datasetTokenizer = ModelStore.defaultModel
    /// Number of requests.
    public var requests = 32
    /// Seed of the sampling (the same seed gives the same requests).
    public var seed: UInt64 = 0

    public init() {}

    /// The sampled requests and a line saying where they came from (file, records, which tokenizer gave the
    /// lengths); nil when there is no dataset.
    func loadTrace(modelTokenizer: Tokenizer?, maxContext: Int) throws -> (requests: [TraceRequest], source: String)? {
        guard let d = dataset else { return nil }
        let path = d.hasPrefix("sharegpt:") ? String(d.dropFirst("sharegpt:".count)) : ShareGPTDataset.defaultPath()
        let data: ShareGPTDataset
        do { data = try ShareGPTDataset(path: path) } catch {
            throw LabError("--dataset \(d): cannot read \(path) (\(error)); fetch it with "
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
        guard !sampled.isEmpty else { throw LabError("--dataset \(d): no request fits the limits") }
        let source = "ShareGPT \(path): \(data.summary); \(sampled.count) requests sampled (seed \(seed)) of "
            + "\(examined) examined; lengths by \(tokenizerName) tokenizer"
        return (sampled, source)
    }
}

/// A tokenizer by known model name (fetched on first use) or .gguf path.
func loadTokenizer(_ nameOrPath: String) throws -> Tokenizer {
    let source: ModelSource = nameOrPath.hasSuffix(".gguf") ? .gguf(path: nameOrPath) : .store(nameOrPath)
    return try source.loadTokenizer(log: printErr)!
}

/// `vattn bench trace`: samples a serving trace from the dataset and writes it as JSON lines
/// (`{"prompt_token_ids": [...], "output_len": N}`, the input of bench/http/loadgen.py). The sampling is
/// `ServeBench`'s, so with the same dataset, seed, count, tokenizer and context the offline benchmark and an HTTP
/// run over `vattn serve` see exactly the same requests.
public struct TraceBench {
    public var data = DatasetSelection()
    /// Tokenizer of the model that will serve the trace: a known model name or a .gguf file.
    public var tokenizer = ModelStore.defaultModel
    /// Longest prompt + output, tokens (the server's max context).
    public var maxContext = 2048
    /// Where to write the trace.
    public var out = "trace.jsonl"

    public init() {}

    /// One line of the trace.
    public struct Line: Codable, Sendable {
        public let prompt_token_ids: [TokenID]
        public let output_len: Int
    }

    public func run() throws {
        guard let (requests, source) = try data.loadTrace(modelTokenizer: try loadTokenizer(tokenizer),
                                                          maxContext: maxContext) else { return }
        var text = ""
        for r in requests { text += try jsonLine(Line(prompt_token_ids: r.prompt, output_len: r.outputLength)) }
        try writeText(text, to: out)
        let input = requests.reduce(0) { $0 + $1.prompt.count }, output = requests.reduce(0) { $0 + $1.outputLength }
        printErr(source)
        printErr("wrote \(out): \(requests.count) requests, \(input) prompt tokens, \(output) output tokens")
    }
}
