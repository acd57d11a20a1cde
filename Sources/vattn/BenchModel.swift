import ArgumentParser
import CUDADriver
import Engine
import Model
import VAttention

/// What the model-level GPU benches share: a dummy-weight model of a named shape on the GPU, and KV stores of each
/// kind over the memory left.
struct GPUModelBenchOptions: ParsableArguments {
    @Option(help: "Model shape with seeded random bf16 weights (see `vattn models list`): llama-3-8b, yi-6b, smollm2-135m.")
    var shape = "llama-3-8b"
    @Option(help: "KV stores to compare, comma-separated: vattention, paged-16, paged-256.")
    var kv = "vattention,paged-16,paged-256"
    @Option(help: "vAttention layout: perLayer or mega.")
    var layout: KVCacheSpec.Layout = .perLayer
    @Option(help: "Share of the GPU memory left after weights and scratch given to the KV cache.")
    var kvShare = 0.9
    @Option(help: "Where to write the JSON result.")
    var json: String?
    @Flag(inversion: .prefixedEnableDisable, help: "Replay decode steps as CUDA graphs.")
    var cudaGraphs = true

    func hyperparameters() throws -> LlamaHyperparameters {
        guard let hp = DummyWeights.knownShape(shape) else {
            throw ValidationError("unknown shape \(shape); known: \(DummyWeights.knownShapes.map(\.name).joined(separator: ", "))")
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
            throw ValidationError("unknown KV store \(kind): vattention, paged-16, paged-256")
        }
        return try model.makeKVStore(pagedBlockSize: block, layout: layout, slots: slots, maxContext: maxContext,
                                     budget: budget)
    }
}

/// Decode throughput vs batch size at a long context (the paper's decode experiment), vAttention vs paged, in the
/// real engine model (dummy weights: the same work as real ones). K/V content does not change the work, so the
/// context is backed (mapped) but not prefilled.
struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "GPU decode throughput vs batch size at a fixed context: vAttention vs paged, with the KV allocation bandwidth each batch needs.")

    @OptionGroup var options: GPUModelBenchOptions
    @Option(help: "Context (tokens already in the cache) of every sequence.") var context = 16384
    @Option(help: "Batch sizes, comma-separated (those that do not fit in memory are reported and skipped).")
    var batches = "1,2,4,8,16,24,32"
    @Option(help: "Timed decode steps per point.") var steps = 32
    @Flag(help: "Also time each phase of a step (GEMMs, attention, norms, sampling) with events; plain launches, no graphs.")
    var profile = false

    func run() throws {
        let hp = try options.hyperparameters()
        let batchSizes = batches.split(separator: ",").compactMap { Int($0) }
        let maxBatch = batchSizes.max() ?? 1
        let model = try options.makeModel(maxTokens: max(maxBatch, 16), maxRows: maxBatch)
        model.profiling = profile
        let bytesPerToken = hp.blockCount * 2 * hp.headCountKV * hp.headDim * 2
        say("vattn bench decode — \(options.shape) (dummy bf16 weights, \(model.weightBytes >> 30) GiB) on "
            + "\(model.deviceDescription); context \(context), \(steps) steps per point; KV \(bytesPerToken >> 10) KiB/token; "
            + "CUDA graphs \(options.cudaGraphs ? "on" : "off")")
        say("kv            batch  step ms p50  p99     tok/s   KV need MB/s  step() µs p50/max  setup s  mapped")
        var rows: [String] = []
        for kind in options.kinds {
            let store = try options.makeStore(kind, model, slots: maxBatch, maxContext: context + steps + 8)
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
                let setupStart = nowNanos()
                do { try store.reserve(zip(slots, lengths).map { ($0, $1) }) } catch {
                    say("\(pad(store.name, 13)) \(pad(b, 6)) does not fit: \(error)")
                    continue
                }
                let setup = Double(nowNanos() - setupStart) / 1e9
                var stepMs: [Double] = [], kvStepUs: [Double] = []
                var tokens = [TokenID](repeating: 1, count: b)
                for i in 0..<(steps + 4) {
                    let t0 = nowNanos()
                    try store.reserve(zip(slots, lengths).map { ($0, $1 + 1) })
                    let t1 = nowNanos()
                    let chunks = (0..<b).map { SequenceChunk(slot: slots[$0], start: lengths[$0], tokens: [tokens[$0]], wantsLogits: true) }
                    tokens = try model.run(chunks, kv: store, sampling: Array(repeating: TokenDraw(parameters: .greedy, uniform: 0), count: b))
                    let t2 = nowNanos()
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
                    + "\(pad(fmt(setup, 2), 8)) \(formatBytes(mapped))")
                if profile, model.profiledSteps > 0 {
                    let perStep = model.profile.mapValues { $0 / Double(model.profiledSteps) }
                    let total = perStep.values.reduce(0, +)
                    say("    per step (events, \(model.profiledSteps) steps): " + perStep.sorted { $0.value > $1.value }
                        .map { "\($0.key) \(fmt($0.value, 3)) ms (\(fmt(100 * $0.value / total, 1))%)" }.joined(separator: ", "))
                }
                rows.append("{\"kv\": \(jsonString(store.name)), \"batch\": \(b), \"context\": \(context), "
                            + "\"stepMillis\": \(s.json), \"tokensPerSecond\": \(fmt(tokPerSec, 1)), "
                            + "\"kvNeedMBps\": \(fmt(needMBps, 1)), \"kvStepMicros\": \(k.json), "
                            + "\"setupSeconds\": \(fmt(setup, 3)), \"mappedBytes\": \(mapped)}")
            }
        }
        if let path = options.json {
            try writeText("{\"shape\": \(jsonString(options.shape)), \"device\": \(jsonString(model.deviceDescription)), "
                          + "\"points\": [\n" + rows.joined(separator: ",\n") + "\n]}\n", to: path)
        }
    }
}

/// Prompt (prefill) throughput vs context length, one sequence, whole prompt at once or in Sarathi chunks.
struct BenchPrompt: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prompt",
        abstract: "GPU prefill throughput vs prompt length, whole or chunked: vAttention vs paged.")

    @OptionGroup var options: GPUModelBenchOptions
    @Option(help: "Prompt lengths, comma-separated.") var lengths = "2048,4096,8192,16384,32768,65536"
    @Option(help: "Chunk sizes to compare, comma-separated (0 = the whole prompt in one step).") var chunks = "0,2048"

    func run() throws {
        let hp = try options.hyperparameters()
        let promptLengths = lengths.split(separator: ",").compactMap { Int($0) }
        let chunkSizes = chunks.split(separator: ",").compactMap { Int($0) }
        let longest = promptLengths.max() ?? 2048
        let biggestStep = chunkSizes.map { $0 == 0 ? longest : $0 }.max() ?? longest
        let model = try options.makeModel(maxTokens: biggestStep, maxRows: 1)
        say("vattn bench prompt — \(options.shape) (dummy bf16 weights) on \(model.deviceDescription)")
        say("kv            chunk   length  seconds   tok/s    TFLOP/s(model)")
        var rows: [String] = []
        let (d, q, kvd, f) = (hp.embeddingLength, hp.headCount * hp.headDim, hp.headCountKV * hp.headDim, hp.feedForwardLength)
        // GEMM FLOPs per token: 2 per weight of every layer's projections (the LM head runs for one row only).
        let params = 2.0 * Double(hp.blockCount * ((q + 2 * kvd) * d + q * d + 3 * f * d))
        for kind in options.kinds {
            let store = try options.makeStore(kind, model, slots: 1, maxContext: longest + 8)
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
                        let start = nowNanos()
                        var done = 0
                        while done < length {
                            let n = chunk == 0 ? length : min(chunk, length - done)
                            try store.reserve([(slot, done + n)])
                            _ = try model.run([SequenceChunk(slot: slot, start: done, tokens: Array(prompt[done..<(done + n)]),
                                                             wantsLogits: done + n == length)],
                                              kv: store, sampling: done + n == length ? [TokenDraw(parameters: .greedy, uniform: 0)] : [])
                            done += n
                        }
                        return Double(nowNanos() - start) / 1e9
                    }
                    _ = try prefill()  // warm-up (kernels, pages mapped)
                    let seconds = min(try prefill(), try prefill())
                    let attentionFlops = 4.0 * Double(hp.blockCount * hp.headCount * hp.headDim) * Double(length) * Double(length) / 2
                    let tflops = (params * Double(length) + attentionFlops) / seconds / 1e12
                    say("\(pad(store.name, 13)) \(pad(chunk == 0 ? "whole" : String(chunk), 7)) \(pad(length, 7)) "
                        + "\(pad(fmt(seconds, 3), 8)) \(pad(fmt(Double(length) / seconds, 0), 8)) \(fmt(tflops, 0))")
                    rows.append("{\"kv\": \(jsonString(store.name)), \"chunk\": \(chunk), \"length\": \(length), "
                                + "\"seconds\": \(fmt(seconds, 4)), \"tokensPerSecond\": \(fmt(Double(length) / seconds, 1)), "
                                + "\"tflops\": \(fmt(tflops, 1))}")
                }
            }
        }
        if let path = options.json {
            try writeText("{\"shape\": \(jsonString(options.shape)), \"device\": \(jsonString(model.deviceDescription)), "
                          + "\"points\": [\n" + rows.joined(separator: ",\n") + "\n]}\n", to: path)
        }
    }
}

/// Decode step latency over time while sequences grow across page boundaries, pages mapped on the critical path
/// (sync) vs by the background mapper one step ahead (the paper's Fig. 11).
struct BenchMapping: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mapping",
        abstract: "GPU decode step latency over time: vAttention with synchronous vs background page mapping.")

    @OptionGroup var options: GPUModelBenchOptions
    @Option(help: "Sequences decoding together.") var batch = 32
    @Option(help: "Context every sequence starts at.") var context = 16384
    @Option(help: "Decode steps timed (each adds a token to every sequence).") var steps = 2048

    func run() throws {
        let model = try options.makeModel(maxTokens: max(batch, 16), maxRows: batch)
        say("vattn bench mapping — \(options.shape) on \(model.deviceDescription); batch \(batch), context \(context) "
            + "→ \(context + steps), layout \(options.layout)")
        say("mapper       step ms p50   p99    max     kv.step ms p50  p99    max     critical maps  background maps")
        var series: [SVGChart.Series] = []
        var rows: [String] = []
        for background in [false, true] {
            let store = try options.makeStore("vattention", model, slots: batch, maxContext: context + steps + 64,
                                              policy: MapAheadPolicy(background: background))
            let slots = try (0..<batch).map { _ in try store.allocateSlot(expectedLength: context + steps) }
            var length = context
            try store.reserve(slots.map { ($0, length) })
            var tokens = [TokenID](repeating: 1, count: batch)
            var stepMs: [Double] = [], kvMs: [Double] = []
            let before = store.memory
            for _ in 0..<steps {
                let t0 = nowNanos()
                try store.reserve(slots.map { ($0, length + 1) })
                let t1 = nowNanos()
                tokens = try model.run(slots.indices.map { SequenceChunk(slot: slots[$0], start: length, tokens: [tokens[$0]], wantsLogits: true) },
                                       kv: store, sampling: Array(repeating: TokenDraw(parameters: .greedy, uniform: 0), count: batch))
                let t2 = nowNanos()
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
            rows.append("{\"mapper\": \"\(name)\", \"stepMillis\": \(s.json), \"kvStepMillis\": \(k.json), "
                        + "\"criticalMaps\": \(critical), \"backgroundMaps\": \(bg), "
                        + "\"steps\": [\(stepMs.map { fmt($0, 3) }.joined(separator: ","))]}")
            for slot in slots { try store.free(slot) }
        }
        if let path = options.json {
            try writeText("{\"shape\": \(jsonString(options.shape)), \"batch\": \(batch), \"context\": \(context), "
                          + "\"device\": \(jsonString(model.deviceDescription)), \"runs\": [\n"
                          + rows.joined(separator: ",\n") + "\n]}\n", to: path)
            let picture = (path.hasSuffix(".json") ? String(path.dropLast(5)) : path) + ".svg"
            try writeText(SVGChart.document([
                SVGChart(title: "Decode step latency, \(options.shape), batch \(batch), context \(context)+",
                         xLabel: "decode step", yLabel: "ms", series: series),
            ]), to: picture)
            say("wrote \(path) and \(picture)")
        }
    }
}

func pad(_ v: Any, _ width: Int) -> String {
    let s = "\(v)"
    return s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}
