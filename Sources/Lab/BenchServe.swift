import Engine
import Model
import Randomness
import Support
import VAttention
#if canImport(Glibc)
import Glibc
#endif

/// `vattn bench serve`: offline (or Poisson-arrival) serving throughput through the engine — req/s, tok/s, TTFT,
/// TPOT, KV memory — on the ShareGPT trace (`data`) or a synthetic workload. Every request generates exactly its
/// output length (end-of-sequence ignored), as vLLM's benchmark does. Writes `Result` as JSON and pictures beside it.
public struct ServeBench {
    /// Synthetic workloads, lengths in tokens (uniform): chat, prompt 16–384 and output 16–256; arxiv, prompt
    /// 512–1536 and output 32–128.
    public enum Workload: String, CaseIterable, Sendable { case chat, arxiv }

    /// The engine to serve with.
    public var config = EngineConfig()
    public var data = DatasetSelection()
    /// Synthetic workload when there is no dataset.
    public var workload: Workload = .chat
    /// Where to write the JSON result.
    public var json: String?
    /// Online serving: requests arrive as a Poisson process at this many per second, and time to first token counts
    /// from arrival (nil: all at once, offline).
    public var rate: Double?

    public init() {}

    /// What the JSON file holds.
    public struct Result: Codable, Sendable {
        public let workload: String
        public let requests: Int
        public let rate: Rounded
        public let kv: String
        public let slots: Int
        public let tokenBudget: Int
        public let seconds: Rounded
        public let requestsPerSecond: Rounded
        public let outputTokensPerSecond: Rounded
        public let ttftMillis: Summary
        public let tpotMillis: Summary
        public let meanKVUsedBytes: Rounded
        public let meanKVMappedBytes: Rounded
        public let preemptions: Int
        public let criticalMaps: Int
        public let backgroundMaps: Int
        public let kvStepMillis: Rounded
    }

    public func run() throws {
        let engine = try EngineBuilder(config, log: printErr).build().engine
        let requests = data.requests
        var rng = SplitMix64(seed: data.seed)
        var ids: [Int] = []
        var pending: [(prompt: [TokenID], parameters: SamplingParameters)] = []
        let source: String
        if let (trace, description) = try data.loadTrace(modelTokenizer: engine.tokenizer, maxContext: engine.kv.maxContext) {
            pending = trace.map { ($0.prompt, SamplingParameters(temperature: 0, maxTokens: $0.outputLength, ignoreEOS: true)) }
            source = description
        } else {
            let (promptRange, outputRange) = workload == .chat ? (16...384, 16...256) : (512...1536, 32...128)
            let vocab = engine.tokenizer?.vocabularySize ?? engine.model.hyperparameters.vocabSize
            for _ in 0..<requests {
                let n = min(Int.random(in: promptRange, using: &rng), engine.kv.maxContext / 2)
                var prompt: [TokenID] = []
                while prompt.count < n {
                    let t = TokenID(Int.random(in: 0..<vocab, using: &rng))
                    if engine.tokenizer?.type(of: t) ?? .normal == .normal { prompt.append(t) }
                }
                let out = min(Int.random(in: outputRange, using: &rng), engine.kv.maxContext - n - 1)
                pending.append((prompt, SamplingParameters(temperature: 0, maxTokens: out, ignoreEOS: true)))
            }
            source = "synthetic \(workload.rawValue) workload (seed \(data.seed))"
        }
        let workloadName = data.dataset == nil ? workload.rawValue : "sharegpt"
        // Arrival offsets (ns): all at 0 offline; exponential gaps at `rate` online.
        var clock = 0.0
        let arrivals: [UInt64] = pending.indices.map { _ in
            guard let rate else { return 0 }
            clock += -log(1 - Double(rng.next() >> 11) / 9_007_199_254_740_992) / rate
            return UInt64(clock * 1e9)
        }
        print("vattn bench serve — \(source)")
        print("  \(pending.count) requests"
              + (rate.map { " arriving at \(fmt($0, 1))/s (Poisson)" } ?? " at once") + ", model on \(engine.model.deviceDescription), "
              + "KV \(engine.kv.name), \(config.slots) slots, token budget \(engine.configuration.tokenBudget)")
        let start = monotonicNanos()
        var first: [Int: UInt64] = [:], last: [Int: UInt64] = [:]
        var mappedSum = 0.0, usedSum = 0.0, samples = 0.0
        var timeline: [(t: Double, stepMs: Double, mapped: Double, used: Double)] = []
        var done = 0
        var arrivalOf: [Int: UInt64] = [:]
        var next = 0
        while engine.hasWork || next < pending.count {
            while next < pending.count, arrivals[next] <= monotonicNanos() - start {
                let id = try engine.add(prompt: pending[next].prompt, parameters: pending[next].parameters)
                ids.append(id)
                arrivalOf[id] = start + arrivals[next]
                next += 1
            }
            if !engine.hasWork {  // idle until the next arrival
                let wait = Int64(arrivals[next]) - Int64(monotonicNanos() - start)
                if wait > 0 { usleep(UInt32(min(wait / 1000, 1_000_000))) }
                continue
            }
            let stepStart = monotonicNanos()
            let events = try engine.step()
            let now = monotonicNanos()
            for e in events {
                if first[e.request] == nil { first[e.request] = now }
                last[e.request] = now
                if e.finished != nil {
                    done += 1
                    if done % max(1, pending.count / 8) == 0 { printErr("  \(done)/\(pending.count) done") }
                }
            }
            let m = engine.kv.memory
            timeline.append((Double(now - start) / 1e9, Double(now - stepStart) / 1e6, Double(m.mappedBytes),
                             Double(m.usedBytes)))
            mappedSum += Double(m.mappedBytes)
            usedSum += Double(m.usedBytes)
            samples += 1
        }
        let seconds = Double(monotonicNanos() - start) / 1e9
        let outputTokens = ids.reduce(0) { $0 + (engine.output(of: $1)?.count ?? 0) }
        let ttfts = ids.map { Double(first[$0]! - arrivalOf[$0]!) / 1e6 }
        let tpots = ids.compactMap { id -> Double? in
            let n = engine.output(of: id)!.count
            return n > 1 ? Double(last[id]! - first[id]!) / 1e6 / Double(n - 1) : nil
        }
        let ttft = Summary(ttfts), tpot = Summary(tpots)
        let stats = engine.stats
        print("  requests/s \(fmt(Double(pending.count) / seconds, 3)), output tok/s \(fmt(Double(outputTokens) / seconds, 1)), "
              + "total tok/s \(fmt(Double(stats.tokensComputed) / seconds, 1)), wall \(fmt(seconds, 1)) s")
        print("  TTFT ms p50 \(fmt(ttft.p50, 0)) p99 \(fmt(ttft.p99, 0)); TPOT ms p50 \(fmt(tpot.p50, 1)) p99 \(fmt(tpot.p99, 1))")
        print("  KV mean used \(formatBytes(Int(usedSum / samples))) / mapped \(formatBytes(Int(mappedSum / samples))); "
              + "preemptions \(stats.preemptions); steps \(stats.steps)")
        let kvEnd = engine.kv.memory
        let kvStepMs: Double = Double(kvEnd.criticalNanos) / 1e6
        let kvShare: Double = kvStepMs / 10 / seconds
        print("  KV maps: \(kvEnd.criticalMaps) on the critical path, \(kvEnd.backgroundMaps) in the background; "
              + "time inside kv.step \(fmt(kvStepMs, 1)) ms (\(fmt(kvShare, 2)) % of the run)")
        if let path = json {
            try writeJSON(Result(
                workload: workloadName, requests: pending.count, rate: rate.map { Rounded($0, 2) }.orNull,
                kv: engine.kv.name, slots: config.slots, tokenBudget: engine.configuration.tokenBudget,
                seconds: Rounded(seconds), requestsPerSecond: Rounded(Double(pending.count) / seconds),
                outputTokensPerSecond: Rounded(Double(outputTokens) / seconds), ttftMillis: ttft, tpotMillis: tpot,
                meanKVUsedBytes: Rounded(usedSum / samples, 0), meanKVMappedBytes: Rounded(mappedSum / samples, 0),
                preemptions: stats.preemptions, criticalMaps: kvEnd.criticalMaps, backgroundMaps: kvEnd.backgroundMaps,
                kvStepMillis: Rounded(kvStepMs, 3)), to: path)
            let picture = svgPath(path)
            try writeText(SVGChart.document([
                SVGChart(title: "KV memory over time (\(engine.kv.name))", xLabel: "seconds", yLabel: "MiB", series: [
                    .init(name: "mapped", points: timeline.map { ($0.t, $0.mapped / 1048576) }),
                    .init(name: "holding live tokens", points: timeline.map { ($0.t, $0.used / 1048576) }),
                ]),
                SVGChart(title: "Engine step latency", xLabel: "seconds", yLabel: "ms",
                         series: [.init(name: "step", points: timeline.map { ($0.t, $0.stepMs) })]),
                SVGChart(title: "Latency CDF", xLabel: "ms", yLabel: "fraction of requests", series: [
                    .init(name: "time per output token", points: SVGChart.cdf(tpots)),
                    .init(name: "time to first token / 100", points: SVGChart.cdf(ttfts.map { $0 / 100 })),
                ]),
            ]), to: picture)
            print("wrote \(path) and \(picture)")
        }
    }
}
