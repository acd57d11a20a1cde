import ArgumentParser
import Engine
import Model
import VAttention
import Randomness

struct BenchServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Offline serving throughput: N requests at once through the engine; req/s, tok/s, TTFT, TPOT, KV memory.",
        discussion: """
            Requests come from --dataset sharegpt (the real ShareGPT trace, sampled as vLLM's benchmark does) or a \
            synthetic workload (lengths in tokens, uniform, scaled to what a 2-core CPU finishes in minutes; prompts \
            are random ordinary tokens):
              chat   prompt 16–384, output 16–256  (short prompts, long answers)
              arxiv  prompt 512–1536, output 32–128 (summarisation: long prompts, short answers)
            Every request generates exactly its output length (end-of-sequence ignored), as vLLM's benchmark does.
            """)

    enum Workload: String, ExpressibleByArgument, CaseIterable { case chat, arxiv }

    @OptionGroup var options: ModelOptions
    @OptionGroup var data: DatasetOptions
    @Option(help: "Synthetic workload when there is no --dataset: chat or arxiv.") var workload: Workload = .chat
    @Option(help: "Where to write the JSON result.") var json: String?
    @Option(help: "Online serving: requests arrive as a Poisson process at this many per second, and time to first token counts from arrival (default: all at once, offline).")
    var rate: Double?

    func run() throws {
        let (engine, _) = try options.makeEngine()
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
              + "KV \(engine.kv.name), \(options.slots) slots, token budget \(engine.configuration.tokenBudget)")
        let start = nowNanos()
        var first: [Int: UInt64] = [:], last: [Int: UInt64] = [:]
        var mappedSum = 0.0, usedSum = 0.0, samples = 0.0
        var timeline: [(t: Double, stepMs: Double, mapped: Double, used: Double)] = []
        var done = 0
        var arrivalOf: [Int: UInt64] = [:]
        var next = 0
        while engine.hasWork || next < pending.count {
            while next < pending.count, arrivals[next] <= nowNanos() - start {
                let id = try engine.add(prompt: pending[next].prompt, parameters: pending[next].parameters)
                ids.append(id)
                arrivalOf[id] = start + arrivals[next]
                next += 1
            }
            if !engine.hasWork {  // idle until the next arrival
                let wait = Int64(arrivals[next]) - Int64(nowNanos() - start)
                if wait > 0 { usleep(UInt32(min(wait / 1000, 1_000_000))) }
                continue
            }
            let stepStart = nowNanos()
            let events = try engine.step()
            let now = nowNanos()
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
        let seconds = Double(nowNanos() - start) / 1e9
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
        print("  KV mean used \(formatBytesShort(usedSum / samples)) / mapped \(formatBytesShort(mappedSum / samples)); "
              + "preemptions \(stats.preemptions); steps \(stats.steps)")
        let kvEnd = engine.kv.memory
        let kvStepMs: Double = Double(kvEnd.criticalNanos) / 1e6
        let kvShare: Double = kvStepMs / 10 / seconds
        print("  KV maps: \(kvEnd.criticalMaps) on the critical path, \(kvEnd.backgroundMaps) in the background; "
              + "time inside kv.step \(fmt(kvStepMs, 1)) ms (\(fmt(kvShare, 2)) % of the run)")
        if let path = json {
            let text = "{\"workload\": \"\(workloadName)\", \"requests\": \(pending.count), \"rate\": \(rate.map { fmt($0, 2) } ?? "null"), \"kv\": \(jsonString(engine.kv.name)), "
                + "\"slots\": \(options.slots), \"tokenBudget\": \(engine.configuration.tokenBudget), \"seconds\": \(fmt(seconds)), "
                + "\"requestsPerSecond\": \(fmt(Double(pending.count) / seconds)), "
                + "\"outputTokensPerSecond\": \(fmt(Double(outputTokens) / seconds)), \"ttftMillis\": \(ttft.json), "
                + "\"tpotMillis\": \(tpot.json), \"meanKVUsedBytes\": \(fmt(usedSum / samples, 0)), "
                + "\"meanKVMappedBytes\": \(fmt(mappedSum / samples, 0)), \"preemptions\": \(stats.preemptions), "
                + "\"criticalMaps\": \(kvEnd.criticalMaps), \"backgroundMaps\": \(kvEnd.backgroundMaps), "
                + "\"kvStepMillis\": \(fmt(kvStepMs, 3))}\n"
            try writeText(text, to: path)
            let picture = (path.hasSuffix(".json") ? String(path.dropLast(5)) : path) + ".svg"
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

func formatBytesShort(_ bytes: Double) -> String { formatBytes(Int(bytes)) }

#if canImport(Glibc)
import Glibc
#endif
