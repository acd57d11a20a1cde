import Engine
import Kernels
import Model
import Randomness
import Support

/// `vattn bench cpu`: the CPU engine's forward pass timed the way llama.cpp's `llama-bench` and
/// `llama-batched-bench` time theirs, for `bench/cpu/llamacpp.sh` to compare on the same GGUF. pp<P>: one prompt of
/// P tokens in one forward pass, tokens/s. tg<N>: N decode steps of one sequence after `depths` tokens of context.
/// Streams S: S prompts of `prompt` tokens in one forward pass, then `generate` decode steps of all S at once.
/// Random token ids, greedy, medians of `repetitions`. Writes `Result` as JSON.
public struct CPUBench {
    /// The model and KV store (the backend is always the CPU; slots and max context grow to what the tests need).
    public var config = EngineConfig()
    /// Prompt lengths for the ppN tests, comma-separated.
    public var promptTests = "128,512"
    /// Decode steps of the tgN tests.
    public var generateTest = 128
    /// Context before the tgN test's decode steps, comma-separated (llama-bench -d).
    public var depths = "0"
    /// Concurrent sequences of the batched tests, comma-separated.
    public var streams = "1,4,8,16"
    /// Prompt tokens per sequence in the batched tests (llama-batched-bench -npp).
    public var prompt = 128
    /// Output tokens per sequence in the batched tests (llama-batched-bench -ntg).
    public var generate = 128
    /// Runs of each test; the median is reported.
    public var repetitions = 3
    /// Where to write the results as JSON.
    public var json: String?

    public init() {}

    /// What the JSON file holds: the device, and per test (pp128, tg128, tg128@d512, streams4, …) its rates
    /// (tokens_per_second; prompt_, output_ and total_tokens_per_second for streams), each test a top-level key.
    public struct Result: Codable, Sendable {
        public let device: String
        public let tests: [String: [String: Rounded]]

        private struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(device: String, tests: [String: [String: Rounded]]) {
            self.device = device
            self.tests = tests
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            device = try c.decode(String.self, forKey: Key(stringValue: "device"))
            var tests: [String: [String: Rounded]] = [:]
            for key in c.allKeys where key.stringValue != "device" {
                tests[key.stringValue] = try c.decode([String: Rounded].self, forKey: key)
            }
            self.tests = tests
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(device, forKey: Key(stringValue: "device"))
            for (name, values) in tests { try c.encode(values, forKey: Key(stringValue: name)) }
        }
    }

    /// Comma-separated non-negative integers, or nil.
    public static func parseList(_ text: String) -> [Int]? {
        let values = text.split(separator: ",").map { Int(String($0.filter { !$0.isWhitespace })) }
        return values.isEmpty || values.contains { $0 == nil || $0! < 0 } ? nil : values.map { $0! }
    }

    public func run() throws {
        let promptLengths = Self.parseList(promptTests)!, depthList = Self.parseList(depths)!
        let streamCounts = Self.parseList(streams)!
        let longest = max((promptLengths.max() ?? 0), (depthList.max() ?? 0) + generateTest, prompt + generate)
        var config = config
        config.backend = .cpu
        config.slots = max(streamCounts.max() ?? 1, 1)
        config.maxContext = max(longest + 1, config.maxContext ?? EngineConfig.defaultMaxContext)
        let builder = EngineBuilder(config, log: printErr)
        let model = try builder.makeCPUModel(try builder.loadModel())
        let kv = try builder.makeKVStore(for: model)
        let vocab = model.hyperparameters.vocabSize
        var random = SplitMix64(seed: 1)
        func tokens(_ n: Int) -> [TokenID] { (0..<n).map { _ in TokenID(random.next() % UInt64(vocab)) } }

        say("vattn bench cpu — \(config.model.name) on \(model.deviceDescription); KV \(kv.name); "
            + "median of \(repetitions)")
        var results: [(name: String, values: [String: Double])] = []

        /// Seconds for one forward pass of `chunks` (the KV store already backs them).
        func timed(_ chunks: [SequenceChunk]) -> Double {
            let start = monotonicNanos()
            _ = model.forward(chunks, kv: kv)
            return Double(monotonicNanos() - start) / 1e9
        }

        // Warm-up, as llama.cpp's benches do: the first pass faults the mapped weights in.
        let warm = try kv.allocateSlot(expectedLength: 17)
        try kv.reserve([(warm, 16)])
        _ = timed([SequenceChunk(slot: warm, start: 0, tokens: tokens(16), wantsLogits: true)])
        try kv.reserve([(warm, 17)])
        _ = timed([SequenceChunk(slot: warm, start: 16, tokens: tokens(1), wantsLogits: true)])
        try kv.free(warm)

        for p in promptLengths where p > 0 {
            let rate = median((0..<repetitions).map { _ in
                let slot = try! kv.allocateSlot(expectedLength: p)
                defer { try! kv.free(slot) }
                try! kv.reserve([(slot, p)])
                return Double(p) / timed([SequenceChunk(slot: slot, start: 0, tokens: tokens(p), wantsLogits: true)])
            })
            results.append(("pp\(p)", ["tokens_per_second": rate]))
            say("  " + pad("pp\(p)", 18) + "\(fmt(rate, 1)) tok/s")
        }
        for depth in depthList where generateTest > 0 {
            let rate = median((0..<repetitions).map { _ in
                let slot = try! kv.allocateSlot(expectedLength: depth + generateTest)
                defer { try! kv.free(slot) }
                if depth > 0 {
                    try! kv.reserve([(slot, depth)])
                    _ = timed([SequenceChunk(slot: slot, start: 0, tokens: tokens(depth), wantsLogits: false)])
                }
                var seconds = 0.0
                for i in 0..<generateTest {
                    try! kv.reserve([(slot, depth + i + 1)])
                    seconds += timed([SequenceChunk(slot: slot, start: depth + i, tokens: tokens(1), wantsLogits: true)])
                }
                return Double(generateTest) / seconds
            })
            let name = "tg\(generateTest)" + (depth > 0 ? "@d\(depth)" : "")
            results.append((name, ["tokens_per_second": rate]))
            say("  " + pad(name, 18) + "\(fmt(rate, 1)) tok/s")
        }
        for s in streamCounts where s > 0 {
            var prefill: [Double] = [], decode: [Double] = [], total: [Double] = []
            for _ in 0..<repetitions {
                let slots = (0..<s).map { _ in try! kv.allocateSlot(expectedLength: prompt + generate) }
                defer { for slot in slots { try! kv.free(slot) } }
                try kv.reserve(slots.map { ($0, prompt) })
                let prefillSeconds = timed(slots.map {
                    SequenceChunk(slot: $0, start: 0, tokens: tokens(prompt), wantsLogits: true)
                })
                var decodeSeconds = 0.0
                for i in 0..<generate {
                    try kv.reserve(slots.map { ($0, prompt + i + 1) })
                    decodeSeconds += timed(slots.map {
                        SequenceChunk(slot: $0, start: prompt + i, tokens: tokens(1), wantsLogits: true)
                    })
                }
                prefill.append(Double(s * prompt) / prefillSeconds)
                decode.append(Double(s * generate) / decodeSeconds)
                total.append(Double(s * (prompt + generate)) / (prefillSeconds + decodeSeconds))
            }
            let row = ["prompt_tokens_per_second": median(prefill), "output_tokens_per_second": median(decode),
                       "total_tokens_per_second": median(total)]
            results.append(("streams\(s)", row))
            say("  \(s) streams × (\(prompt) + \(generate)): prompt \(fmt(row["prompt_tokens_per_second"]!, 1)) tok/s, "
                + "output \(fmt(row["output_tokens_per_second"]!, 1)) tok/s, total \(fmt(row["total_tokens_per_second"]!, 1)) tok/s")
        }
        if let json {
            try writeJSON(Result(device: model.deviceDescription, tests: Dictionary(
                results.map { ($0.name, $0.values.mapValues { Rounded($0, 3) }) }, uniquingKeysWith: { a, _ in a })),
                to: json)
        }
    }
}

private func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
