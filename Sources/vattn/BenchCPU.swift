import ArgumentParser
import Engine
import Kernels
import Model
import Randomness

/// The CPU engine's forward pass timed the way llama.cpp's `llama-bench` and `llama-batched-bench` time theirs, for
/// `bench/cpu/llamacpp.sh` to compare on the same GGUF.
struct BenchCPU: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpu",
        abstract: "CPU forward pass throughput like llama-bench (ppN, tgN) and llama-batched-bench (N streams × "
            + "prompt + output): random token ids, greedy, medians of --repetitions.",
        discussion: """
            pp<P>: one prompt of P tokens in one forward pass, tokens/s (llama-bench -p P). \
            tg<N>: N decode steps of one sequence after --depth tokens of context, tokens/s (llama-bench -n N -d D). \
            Streams S: S prompts of --prompt tokens in one forward pass, then --generate decode steps of all S at \
            once; prompt tokens/s, output tokens/s and all tokens / all time (llama-batched-bench -npp -ntg -npl: \
            S_PP, S_TG, S).
            """)

    @OptionGroup var options: ModelOptions
    @Option(help: "Prompt lengths for the ppN tests, comma-separated.") var promptTests = "128,512"
    @Option(help: "Decode steps of the tgN tests.") var generateTest = 128
    @Option(help: "Context before the tgN test's decode steps, comma-separated (llama-bench -d).") var depths = "0"
    @Option(help: "Concurrent sequences of the batched tests, comma-separated.") var streams = "1,4,8,16"
    @Option(help: "Prompt tokens per sequence in the batched tests (llama-batched-bench -npp).") var prompt = 128
    @Option(help: "Output tokens per sequence in the batched tests (llama-batched-bench -ntg).") var generate = 128
    @Option(help: "Runs of each test; the median is reported.") var repetitions = 3
    @Option(help: "Where to write the results as JSON.") var json: String?

    func validate() throws {
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1") }
        for list in [promptTests, depths, streams] where parseList(list) == nil {
            throw ValidationError("'\(list)': expected comma-separated non-negative integers")
        }
    }

    func run() throws {
        var options = options
        options.backend = .cpu
        let loaded = try options.loadModel()
        let model = try CPULlamaModel(weights: loaded.weights, matmul: options.requestedCPUMatmul)
        let promptLengths = parseList(promptTests)!, depthList = parseList(depths)!, streamCounts = parseList(streams)!
        let longest = max((promptLengths.max() ?? 0), (depthList.max() ?? 0) + generateTest, prompt + generate)
        options.slots = max(streamCounts.max() ?? 1, 1)
        options.maxContextOption = max(longest + 1, options.maxContext)
        let kv = try options.makeKVStore(model)
        let vocab = model.hyperparameters.vocabSize
        var random = SplitMix64(seed: 1)
        func tokens(_ n: Int) -> [TokenID] { (0..<n).map { _ in TokenID(random.next() % UInt64(vocab)) } }

        say("vattn bench cpu — \(options.model) on \(model.deviceDescription); KV \(kv.name); "
            + "median of \(repetitions)")
        var results: [(name: String, values: [String: Double])] = []

        /// Seconds for one forward pass of `chunks` (the KV store already backs them).
        func timed(_ chunks: [SequenceChunk]) -> Double {
            let start = nowNanos()
            _ = model.forward(chunks, kv: kv)
            return Double(nowNanos() - start) / 1e9
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
            say("  " + rpad("pp\(p)", 18) + "\(fmt(rate, 1)) tok/s")
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
            say("  " + rpad(name, 18) + "\(fmt(rate, 1)) tok/s")
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
            let body = results.map { r in
                "  \(jsonString(r.name)): {" + r.values.sorted { $0.key < $1.key }
                    .map { "\(jsonString($0.key)): \(fmt($0.value, 3))" }.joined(separator: ", ") + "}"
            }.joined(separator: ",\n")
            try writeText("{\n  \"device\": \(jsonString(model.deviceDescription)),\n\(body)\n}\n", to: json)
        }
    }
}

private func rpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }

private func parseList(_ text: String) -> [Int]? {
    let values = text.split(separator: ",").map { Int(String($0.filter { !$0.isWhitespace })) }
    return values.isEmpty || values.contains { $0 == nil || $0! < 0 } ? nil : values.map { $0! }
}

private func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
