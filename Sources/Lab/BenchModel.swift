import CUDADriver
import Engine
import Model
import Support
import VAttention

/// What the model-level GPU benches share: a dummy-weight model of a named shape on the GPU, and KV stores of each
/// kind over the memory left.
public struct GPUModelBenchSetup: Sendable {
    /// Model shape with seeded random bf16 weights (`DummyWeights.knownShapes`).
    public var shape = "llama-3-8b"
    /// KV stores to compare, comma-separated: vattention, paged-16, paged-256.
    public var kv = "vattention,paged-16,paged-256"
    /// vAttention layout.
    public var layout: KVCacheSpec.Layout = .perLayer
    /// Share of the GPU memory left after weights and scratch given to the KV cache.
    public var kvShare = 0.9
    /// Where to write the JSON result (and the SVG picture beside it).
    public var json: String?
    /// Replay decode steps as CUDA graphs.
    public var cudaGraphs = true

    public init() {}

    func hyperparameters() throws -> LlamaHyperparameters {
        guard let hp = DummyWeights.knownShape(shape) else {
            throw LabUsageError("unknown shape \(shape); known: \(DummyWeights.knownShapes.map(\.name).joined(separator: ", "))")
        }
        return hp
    }

    var kinds: [String] { kv.split(separator: ",").map(String.init) }

    /// The dummy-weight model of `shape` on the first GPU, for steps of up to `maxTokens` tokens and `maxRows` rows.
    func makeModel(maxTokens: Int, maxRows: Int) throws -> CUDALlamaModel {
        let model = try CUDALlamaModel(weights: DummyWeights(hyperparameters: try hyperparameters(), seed: 0),
                                       device: try CUDADevice(try CUDA.load()), maxTokens: maxTokens,
                                       maxRows: maxRows, compiler: try NVRTC())
        model.useGraphs = cudaGraphs
        return model
    }

    func makeStore(_ kind: String, _ model: CUDALlamaModel, slots: Int, maxContext: Int,
                   policy: MapAheadPolicy = MapAheadPolicy()) throws -> any KVStore {
        let budget = Int(Double(try model.device.memoryInfo().free) * kvShare)
        if kind == "vattention" {
            return try model.makeKVStore(pagedBlockSize: nil, layout: layout, slots: slots, maxContext: maxContext,
                                         budget: budget, policy: policy)
        }
        guard kind.hasPrefix("paged-"), let block = Int(kind.dropFirst(6)) else {
            throw LabUsageError("unknown KV store \(kind): vattention, paged-16, paged-256")
        }
        return try model.makeKVStore(pagedBlockSize: block, layout: layout, slots: slots, maxContext: maxContext,
                                     budget: budget)
    }
}

/// Decode throughput vs batch size at a long context (the paper's decode experiment), vAttention vs paged, in the
/// real engine model (dummy weights: the same work as real ones). K/V content does not change the work, so the
/// context is backed (mapped) but not prefilled.
public struct DecodeBench {
    public var setup = GPUModelBenchSetup()
    /// Context (tokens already in the cache) of every sequence.
    public var context = 16384
    /// Batch sizes, comma-separated (those that do not fit in memory are reported and skipped).
    public var batches = "1,2,4,8,16,24,32"
    /// Timed decode steps per point.
    public var steps = 32
    /// Also time each phase of a step with events; plain launches, no graphs.
    public var profile = false

    public init() {}

    /// What the JSON file holds.
    public struct Result: Codable, Sendable {
        public struct Point: Codable, Sendable {
            public let kv: String
            public let batch: Int
            public let context: Int
            public let stepMillis: Summary
            public let tokensPerSecond: Rounded
            public let kvNeedMBps: Rounded
            public let kvStepMicros: Summary
            public let setupSeconds: Rounded
            public let mappedBytes: Int
        }
        public let shape: String
        public let device: String
        public let points: [Point]
    }

    public func run() throws {
        let hp = try setup.hyperparameters()
        let batchSizes = batches.split(separator: ",").compactMap { Int($0) }
        let maxBatch = batchSizes.max() ?? 1
        let model = try setup.makeModel(maxTokens: max(maxBatch, 16), maxRows: maxBatch)
        model.profiling = profile
        let bytesPerToken = hp.blockCount * 2 * hp.headCountKV * hp.headDim * 2
        say("vattn bench decode — \(setup.shape) (dummy bf16 weights, \(model.weightBytes >> 30) GiB) on "
            + "\(model.deviceDescription); context \(context), \(steps) steps per point; KV \(bytesPerToken >> 10) KiB/token; "
            + "CUDA graphs \(setup.cudaGraphs ? "on" : "off")")
        say("kv            batch  step ms p50  p99     tok/s   KV need MB/s  step() µs p50/max  setup s  mapped")
        var rows: [Result.Point] = []
        for kind in setup.kinds {
            let store = try setup.makeStore(kind, model, slots: maxBatch, maxContext: context + steps + 8)
            for b in batchSizes {
                var slots: [Int] = []
                do {
                    for _ in 0..<b { slots.append(try store.allocateSlot(expectedLength: context + steps)) }
                } catch {
                    for s in slots { try? store.free(s) }
                    say("\(pad(store.name, 13)) \(pad(b, 6)) does not fit: \(error)")
                    continue
                }
                defer { for s in slots { try? store.free(s) } }
                var lengths = slots.map { _ in context }
                let setupStart = monotonicNanos()
                do { try store.reserve(zip(slots, lengths).map { ($0, $1) }) } catch {
                    say("\(pad(store.name, 13)) \(pad(b, 6)) does not fit: \(error)")
                    continue
                }
                let setupSeconds = Double(monotonicNanos() - setupStart) / 1e9
                var stepMs: [Double] = [], kvStepUs: [Double] = []
                var tokens = [TokenID](repeating: 1, count: b)
                for i in 0..<(steps + 4) {
                    let t0 = monotonicNanos()
                    try store.reserve(zip(slots, lengths).map { ($0, $1 + 1) })
                    let t1 = monotonicNanos()
                    let chunks = (0..<b).map { SequenceChunk(slot: slots[$0], start: lengths[$0], tokens: [tokens[$0]], wantsLogits: true) }
                    tokens = try model.run(chunks, kv: store, sampling: Array(repeating: TokenDraw(parameters: .greedy, uniform: 0), count: b))
                    let t2 = monotonicNanos()
                    for j in lengths.indices { lengths[j] += 1 }
                    if i == 3 { model.resetProfile() }
                    if i >= 4 {  // warm-up: kernel first use, workspace allocation
                        stepMs.append(Double(t2 - t0) / 1e6)
                        kvStepUs.append(Double(t1 - t0) / 1e3)
                    }
                }
                let s = Summary(stepMs), k = Summary(kvStepUs)
                let tokPerSec = Double(b) / (s.p50 / 1000)
                let needMBps = tokPerSec * Double(bytesPerToken) / 1e6
                let mapped = store.memory.mappedBytes
                say("\(pad(store.name, 13)) \(pad(b, 6)) \(pad(fmt(s.p50, 2), 12)) \(pad(fmt(s.p99, 2), 7)) "
                    + "\(pad(fmt(tokPerSec, 0), 9)) \(pad(fmt(needMBps, 1), 13)) \(pad(fmt(k.p50, 0) + "/" + fmt(k.max, 0), 18)) "
                    + "\(pad(fmt(setupSeconds, 2), 8)) \(formatBytes(mapped))")
                if profile, model.profiledSteps > 0 {
                    let perStep = model.profile.mapValues { $0 / Double(model.profiledSteps) }
                    let total = perStep.values.reduce(0, +)
                    say("    per step (events, \(model.profiledSteps) steps): " + perStep.sorted { $0.value > $1.value }
                        .map { "\($0.key) \(fmt($0.value, 3)) ms (\(fmt(100 * $0.value / total, 1))%)" }.joined(separator: ", "))
                }
                rows.append(Result.Point(kv: store.name, batch: b, context: context, stepMillis: s,
                                         tokensPerSecond: Rounded(tokPerSec, 1), kvNeedMBps: Rounded(needMBps, 1),
                                         kvStepMicros: k, setupSeconds: Rounded(setupSeconds, 3), mappedBytes: mapped))
            }
        }
        if let path = setup.json {
            try writeJSON(Result(shape: setup.shape, device: model.deviceDescription, points: rows), to: path)
            let picture = svgPath(path)
            let kinds = rows.reduce(into: [String]()) { if !$0.contains($1.kv) { $0.append($1.kv) } }
            try writeText(SVGChart.document([
                SVGChart(title: "Decode throughput, \(setup.shape), context \(context) (\(model.deviceDescription))",
                         xLabel: "batch size", yLabel: "output tokens/s",
                         series: kinds.map { kv in
                             .init(name: kv, points: rows.filter { $0.kv == kv }
                                 .map { (Double($0.batch), $0.tokensPerSecond.value ?? 0) })
                         }),
            ]), to: picture)
            say("wrote \(path) and \(picture)")
        }
    }
}

/// Prompt (prefill) throughput vs context length, one sequence, whole prompt at once or in Sarathi chunks.
public struct PromptBench {
    public var setup = GPUModelBenchSetup()
    /// Prompt lengths, comma-separated.
    public var lengths = "2048,4096,8192,16384,32768,65536"
    /// Chunk sizes to compare, comma-separated (0 = the whole prompt in one step).
    public var chunks = "0,2048"

    public init() {}

    /// What the JSON file holds.
    public struct Result: Codable, Sendable {
        public struct Point: Codable, Sendable {
            public let kv: String
            public let chunk: Int
            public let length: Int
            public let seconds: Rounded
            public let tokensPerSecond: Rounded
            public let tflops: Rounded
        }
        public let shape: String
        public let device: String
        public let points: [Point]
    }

    public func run() throws {
        let hp = try setup.hyperparameters()
        let promptLengths = lengths.split(separator: ",").compactMap { Int($0) }
        let chunkSizes = chunks.split(separator: ",").compactMap { Int($0) }
        let longest = promptLengths.max() ?? 2048
        let biggestStep = chunkSizes.map { $0 == 0 ? longest : $0 }.max() ?? longest
        let model = try setup.makeModel(maxTokens: biggestStep, maxRows: 1)
        say("vattn bench prompt — \(setup.shape) (dummy bf16 weights) on \(model.deviceDescription)")
        say("kv            chunk   length  seconds   tok/s    TFLOP/s(model)")
        var rows: [Result.Point] = []
        // GEMM FLOPs per token: 2 per weight of every layer's projections (the LM head runs for one row only).
        let params = 2.0 * Double(hp.blockCount * hp.projectionParametersPerLayer)
        for kind in setup.kinds {
            let store = try setup.makeStore(kind, model, slots: 1, maxContext: longest + 8)
            for chunk in chunkSizes {
                for length in promptLengths {
                    let slot = try store.allocateSlot(expectedLength: length)
                    defer { try? store.free(slot) }
                    var rng = UInt32(length)
                    let prompt = (0..<length).map { _ -> TokenID in
                        rng = rng &* 1_664_525 &+ 1_013_904_223
                        return TokenID(rng % UInt32(hp.vocabSize))
                    }
                    func prefill() throws -> Double {
                        let start = monotonicNanos()
                        var done = 0
                        while done < length {
                            let n = chunk == 0 ? length : min(chunk, length - done)
                            try store.reserve([(slot, done + n)])
                            _ = try model.run([SequenceChunk(slot: slot, start: done, tokens: Array(prompt[done..<(done + n)]),
                                                             wantsLogits: done + n == length)],
                                              kv: store, sampling: done + n == length ? [TokenDraw(parameters: .greedy, uniform: 0)] : [])
                            done += n
                        }
                        return Double(monotonicNanos() - start) / 1e9
                    }
                    _ = try prefill()  // warm-up (kernels, pages mapped)
                    let seconds = min(try prefill(), try prefill())
                    let attentionFlops = 4.0 * Double(hp.blockCount * hp.headCount * hp.headDim) * Double(length) * Double(length) / 2
                    let tflops = (params * Double(length) + attentionFlops) / seconds / 1e12
                    say("\(pad(store.name, 13)) \(pad(chunk == 0 ? "whole" : String(chunk), 7)) \(pad(length, 7)) "
                        + "\(pad(fmt(seconds, 3), 8)) \(pad(fmt(Double(length) / seconds, 0), 8)) \(fmt(tflops, 0))")
                    rows.append(Result.Point(kv: store.name, chunk: chunk, length: length, seconds: Rounded(seconds, 4),
                                             tokensPerSecond: Rounded(Double(length) / seconds, 1),
                                             tflops: Rounded(tflops, 1)))
                }
            }
        }
        if let path = setup.json {
            try writeJSON(Result(shape: setup.shape, device: model.deviceDescription, points: rows), to: path)
            let picture = svgPath(path)
            let keys = rows.reduce(into: [(kv: String, chunk: Int)]()) { acc, p in
                if !acc.contains(where: { $0 == (p.kv, p.chunk) }) { acc.append((p.kv, p.chunk)) }
            }
            try writeText(SVGChart.document([
                SVGChart(title: "Prefill throughput, \(setup.shape) (\(model.deviceDescription))",
                         xLabel: "prompt tokens", yLabel: "tokens/s",
                         series: keys.map { key in
                             .init(name: "\(key.kv) \(key.chunk == 0 ? "whole" : "\(key.chunk) chunks")",
                                   points: rows.filter { ($0.kv, $0.chunk) == key }
                                       .map { (Double($0.length), $0.tokensPerSecond.value ?? 0) })
                         }, logX: true),
            ]), to: picture)
            say("wrote \(path) and \(picture)")
        }
    }
}

/// Decode step latency over time while sequences grow across page boundaries, pages mapped on the critical path
/// (sync) vs by the background mapper one step ahead (the paper's Fig. 11).
public struct MappingBench {
    public var setup = GPUModelBenchSetup()
    /// Sequences decoding together.
    public var batch = 32
    /// Context every sequence starts at.
    public var context = 16384
    /// Decode steps timed (each adds a token to every sequence).
    public var steps = 2048

    public init() {}

    /// What the JSON file holds.
    public struct Result: Codable, Sendable {
        public struct Run: Codable, Sendable {
            public let mapper: String
            public let stepMillis: Summary
            public let kvStepMillis: Summary
            public let criticalMaps: Int
            public let backgroundMaps: Int
            /// Every step's time, ms.
            public let steps: [Rounded]
        }
        public let shape: String
        public let batch: Int
        public let context: Int
        public let device: String
        public let runs: [Run]
    }

    public func run() throws {
        let model = try setup.makeModel(maxTokens: max(batch, 16), maxRows: batch)
        say("vattn bench mapping — \(setup.shape) on \(model.deviceDescription); batch \(batch), context \(context) "
            + "→ \(context + steps), layout \(setup.layout)")
        say("mapper       step ms p50   p99    max     kv.step ms p50  p99    max     critical maps  background maps")
        var series: [SVGChart.Series] = []
        var rows: [Result.Run] = []
        for background in [false, true] {
            let store = try setup.makeStore("vattention", model, slots: batch, maxContext: context + steps + 64,
                                              policy: MapAheadPolicy(background: background))
            let slots = try (0..<batch).map { _ in try store.allocateSlot(expectedLength: context + steps) }
            var length = context
            try store.reserve(slots.map { ($0, length) })
            var tokens = [TokenID](repeating: 1, count: batch)
            var stepMs: [Double] = [], kvMs: [Double] = []
            let before = store.memory
            for _ in 0..<steps {
                let t0 = monotonicNanos()
                try store.reserve(slots.map { ($0, length + 1) })
                let t1 = monotonicNanos()
                tokens = try model.run(slots.indices.map { SequenceChunk(slot: slots[$0], start: length, tokens: [tokens[$0]], wantsLogits: true) },
                                       kv: store, sampling: Array(repeating: TokenDraw(parameters: .greedy, uniform: 0), count: batch))
                let t2 = monotonicNanos()
                length += 1
                stepMs.append(Double(t2 - t0) / 1e6)
                kvMs.append(Double(t1 - t0) / 1e6)
            }
            let after = store.memory
            let name = background ? "background" : "sync"
            let s = Summary(stepMs), k = Summary(kvMs)
            let critical = after.criticalMaps - before.criticalMaps, bg = after.backgroundMaps - before.backgroundMaps
            say("\(pad(name, 12)) \(pad(fmt(s.p50, 2), 13)) \(pad(fmt(s.p99, 2), 6)) \(pad(fmt(s.max, 2), 7)) "
                + "\(pad(fmt(k.p50, 3), 15)) \(pad(fmt(k.p99, 3), 6)) \(pad(fmt(k.max, 2), 7)) \(pad(critical, 14)) \(bg)")
            series.append(.init(name: "\(name) mapping", points: stepMs.enumerated().map { (Double($0.offset), $0.element) }))
            rows.append(Result.Run(mapper: name, stepMillis: s, kvStepMillis: k, criticalMaps: critical,
                                   backgroundMaps: bg, steps: stepMs.map { Rounded($0, 3) }))
            for slot in slots { try store.free(slot) }
        }
        if let path = setup.json {
            try writeJSON(Result(shape: setup.shape, batch: batch, context: context, device: model.deviceDescription,
                                 runs: rows), to: path)
            let picture = svgPath(path)
            try writeText(SVGChart.document([
                SVGChart(title: "Decode step latency, \(setup.shape), batch \(batch), context \(context)+",
                         xLabel: "decode step", yLabel: "ms", series: series),
            ]), to: picture)
            say("wrote \(path) and \(picture)")
        }
    }
}
