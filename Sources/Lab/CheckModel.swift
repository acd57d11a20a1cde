import CUDADriver
import CUDAKernels
import Engine
import FoundationEssentials
import Model
import Randomness
import Support
import VAttention
#if canImport(Glibc)
import Glibc
#endif

/// `vattn check model`: the GPU model against HF transformers (the fixtures the CPU tests use), in every KV mode;
/// the engine on the GPU (batched = alone, vAttention = paged, CUDA graphs = plain launches); the GPU sampler
/// against the CPU rule.
public struct ModelCheck {
    /// The HF reference outputs (made by scripts/fixtures/make_forward_fixtures.py on the GPU machine).
    public var fixture = "Tests/EngineTests/Fixtures/smollm2_forward.json"
    /// Model: a short name from `vattn models list` or a .gguf path.
    public var model = ModelStore.defaultModel
    /// Largest |ours − HF| allowed on HF's top-5 logits. bf16 weights and activations (HF: fp32).
    public var tolerance: Double = 0.75
    /// Greedy tokens that must equal HF's, per prompt.
    public var greedyPrefix = 8

    public init() {}

    struct Case: Decodable {
        struct Top: Decodable { var position: Int; var ids: [Int]; var logits: [Double] }
        var prompt_ids: [Int32]
        var top5: [Top]
        var greedy: [Int32]
    }
    struct Fixture: Decodable { var oracle: String; var cases: [Case] }

    /// Prints each check and a PASS/FAIL line; false when one failed.
    public func run() throws -> Bool {
        let fixtureFile = try MappedFile(path: fixture)
        let fixture = try withExtendedLifetime(fixtureFile) {
            try JSONDecoder().decode(Fixture.self, from: Data(fixtureFile.bytes))
        }
        let store = ModelStore()
        guard let path = model.hasSuffix(".gguf") ? model : try store.locate(model) else {
            throw LabUsageError("\(model) is not in the model cache: run `vattn models pull \(model)`")
        }
        let file = try GGUFFile(path: path)
        let cuda = try CUDA.load()
        let device = try CUDADevice(cuda)
        let start = monotonicNanos()
        let gpu = try CUDALlamaModel(weights: try GGUFWeights(file: file), device: device, maxTokens: 512, maxRows: 64,
                                     compiler: try NVRTC())
        say("model: \(path) on \(gpu.deviceDescription); weights \(gpu.weightBytes >> 20) MiB bf16, "
              + "loaded in \(fmt(Double(monotonicNanos() - start) / 1e9, 1)) s")
        say("oracle: \(fixture.oracle); tolerance \(tolerance) on top-5 logits, greedy prefix \(greedyPrefix)")
        var failures = 0
        // The engines and stores of the checks: 8 slots of 1024 tokens in 512 MiB of the GPU.
        let base = EngineConfig(model: .gguf(path: path), backend: .cuda, slots: 8, maxContext: 1024,
                                tokenBudget: 256, kvBudgetBytes: 512 << 20)
        for kv in [EngineConfig.KVMode.vattention(layout: .perLayer, cpuPageSize: 64 << 10),
                   .vattention(layout: .mega, cpuPageSize: 64 << 10), .paged(blockSize: 16)] {
            var config = base
            config.kv = kv
            let store = try EngineBuilder(config, log: printErr).makeKVStore(for: gpu)
            let label: String
            if case .vattention(let layout?, _) = kv { label = "vattention/\(layout)" } else { label = store.name }
            failures += try checkForward(gpu, store, fixture, label)
        }
        failures += try checkEngine(gpu, file, base)
        failures += try checkSampler(gpu, device)
        say(failures == 0 ? "PASS check model" : "FAIL check model: \(failures) failures")
        return failures == 0
    }

    /// Prefill logits (whole prompt), chunked prefill + decode logits position by position, greedy continuation
    /// sampled on the GPU.
    func checkForward(_ gpu: CUDALlamaModel, _ kv: any KVStore, _ fixture: Fixture, _ label: String) throws -> Int {
        var failures = 0, worst = 0.0, checked = 0, greedyMatches: [Int] = []
        for (n, c) in fixture.cases.enumerated() {
            let slot = try kv.allocateSlot(expectedLength: c.prompt_ids.count + c.greedy.count)
            try kv.reserve([(slot, c.prompt_ids.count)])
            var byPosition: [Int: [Float]] = [:]
            byPosition[c.prompt_ids.count - 1] = try gpu.logits(
                [SequenceChunk(slot: slot, start: 0, tokens: c.prompt_ids, wantsLogits: true)], kv: kv)[0]
            for top in c.top5 where byPosition[top.position] != nil {
                let (ok, err) = compare(byPosition[top.position]!, top)
                worst = max(worst, err); checked += 1
                if !ok { failures += 1; say("  FAIL \(label) case \(n) prefill position \(top.position): |Δ| \(err)") }
            }
            try kv.free(slot)

            // Chunked: four tokens, then one at a time (the decode kernel) through the prompt, then greedy.
            let s2 = try kv.allocateSlot(expectedLength: c.prompt_ids.count + c.greedy.count)
            let first = min(4, c.prompt_ids.count)
            try kv.reserve([(s2, first)])
            byPosition = [first - 1: try gpu.logits(
                [SequenceChunk(slot: s2, start: 0, tokens: Array(c.prompt_ids[0..<first]), wantsLogits: true)],
                kv: kv)[0]]
            for p in stride(from: first, to: c.prompt_ids.count - 1, by: 1) {
                try kv.reserve([(s2, p + 1)])
                byPosition[p] = try gpu.logits(
                    [SequenceChunk(slot: s2, start: p, tokens: [c.prompt_ids[p]], wantsLogits: true)], kv: kv)[0]
            }
            for top in c.top5 where byPosition[top.position] != nil {
                let (ok, err) = compare(byPosition[top.position]!, top)
                worst = max(worst, err); checked += 1
                if !ok { failures += 1; say("  FAIL \(label) case \(n) decode position \(top.position): |Δ| \(err)") }
            }
            var generated: [Int32] = []
            var length = c.prompt_ids.count - 1
            var token = c.prompt_ids[length]
            while generated.count < c.greedy.count {
                try kv.reserve([(s2, length + 1)])
                token = try gpu.run([SequenceChunk(slot: s2, start: length, tokens: [token], wantsLogits: true)],
                                    kv: kv, sampling: [TokenDraw(parameters: .greedy, uniform: 0)])[0]
                generated.append(token)
                length += 1
            }
            let same = zip(generated, c.greedy).prefix { $0 == $1 }.count
            greedyMatches.append(same)
            if same < min(greedyPrefix, c.greedy.count) {
                failures += 1
                say("  FAIL \(label) case \(n): greedy agrees for \(same) tokens: \(generated) vs HF \(c.greedy)")
            }
            try kv.free(s2)
        }
        say("\(failures == 0 ? "PASS" : "FAIL") forward \(label): \(checked) positions, max |Δ| on HF top-5 "
              + "\(fmt(worst, 3)); greedy tokens equal to HF for \(greedyMatches) of \(fixture.cases.map { $0.greedy.count })")
        return failures
    }

    func compare(_ logits: [Float], _ top: Case.Top) -> (Bool, Double) {
        if logits.contains(where: { !$0.isFinite }) { return (false, .infinity) }
        let ours = logits.indices.max { logits[$0] < logits[$1] }!
        let err = zip(top.ids, top.logits).map { abs(Double(logits[$0]) - $1) }.max()!
        // Arg-max must agree unless HF's own top two are closer than the tolerance (a near-tie bf16 may flip).
        let argmaxOK = ours == top.ids[0] || (top.logits[0] - top.logits[1]) < tolerance
        return (argmaxOK && err <= tolerance, err)
    }

    /// The engine on the GPU: eight requests together = each alone (greedy), and vAttention = paged.
    func checkEngine(_ gpu: CUDALlamaModel, _ file: GGUFFile, _ base: EngineConfig) throws -> Int {
        let tokenizer = try Tokenizer(file: file)
        let template = try ChatTemplate(file: file)
        let questions = ["What is the capital of France?", "Write a haiku about memory.", "Count from 1 to 10.",
                         "Explain virtual memory in one sentence.", "What is 12 times 12?", "Name three colors.",
                         "Say hello in Spanish.", "What does a GPU do?"]
        let prompts = questions.map {
            template.encode([.user($0)], addGenerationPrompt: true, tokenizer: tokenizer)
        }
        func outputs(_ kv: EngineConfig.KVMode, _ batch: [[TokenID]]) throws -> [[TokenID]] {
            var config = base
            config.kv = kv
            let engine = try EngineBuilder(config, log: printErr).makeEngine(runner: gpu, tokenizer: tokenizer)
            let ids = try batch.map { try engine.add(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 32)) }
            try engine.runToCompletion()
            return ids.map { engine.output(of: $0)! }
        }
        let vattention = EngineConfig.KVMode.vattention(layout: .perLayer, cpuPageSize: 64 << 10)
        let paged = EngineConfig.KVMode.paged(blockSize: 16)
        gpu.useGraphs = false
        let together = try outputs(vattention, prompts)
        let alone = try prompts.map { try outputs(vattention, [$0])[0] }
        let pagedOutputs = try outputs(paged, prompts)
        gpu.useGraphs = true
        let graphed = try outputs(vattention, prompts)
        let graphedPaged = try outputs(paged, prompts)
        gpu.useGraphs = false
        func agreement(_ a: [[TokenID]], _ b: [[TokenID]]) -> (equal: Int, tokens: Int) {
            (zip(a, b).filter { $0 == $1 }.count, zip(a, b).map { x, y in zip(x, y).prefix { $0 == $1 }.count }.reduce(0, +))
        }
        let ta = agreement(together, alone), tp = agreement(together, pagedOutputs)
        let tg = agreement(together, graphed), tgp = agreement(pagedOutputs, graphedPaged)
        let total = together.map(\.count).reduce(0, +)
        say("engine: batched vs alone \(ta.equal)/8 identical (\(ta.tokens)/\(total) tokens before the first "
              + "difference); vattention vs paged \(tp.equal)/8 identical (\(tp.tokens)/\(total))")
        say("engine: CUDA graphs vs plain launches: vattention \(tg.equal)/8 identical, paged \(tgp.equal)/8 identical "
            + "(\(gpu.graphCaptures) graphs captured, \(gpu.graphReplays) replays)")
        say("  sample: \(tokenizer.decode(together[0]).debugDescription)")
        // Batching changes GEMM shapes and so bf16 rounding: near-ties may flip late; demand most tokens agree.
        // Graphs replay the very launches of the plain path (decode batches are padded to buckets either way).
        let failures = (ta.tokens * 10 < total * 9 ? 1 : 0) + (tp.equal < 8 ? 1 : 0) + (tg.equal < 8 ? 1 : 0)
            + (tgp.equal < 8 ? 1 : 0) + (gpu.graphReplays == 0 ? 1 : 0)
        say("\(failures == 0 ? "PASS" : "FAIL") engine on the GPU")
        return failures
    }

    /// GPU sampling kernel vs the CPU rule (`sampleToken`) on random logits: greedy exact; sampled tokens agree
    /// except where fast-math exp moves a boundary by a rounding step; sampled frequencies follow the distribution.
    func checkSampler(_ gpu: CUDALlamaModel, _ device: CUDADevice) throws -> Int {
        let cuda = device.cuda
        let kernels = try LlamaKernels(device: device, compiler: try NVRTC())
        var rng = SplitMix64(seed: 0x5A3D)
        var failures = 0
        for vocab in [49_152, 128_256] {
            let rows = 256
            var logits = [Float](repeating: 0, count: rows * vocab)
            for i in logits.indices { logits[i] = rng.nextSignedUnitFloat() * 6 }
            var draws: [TokenDraw] = []
            for r in 0..<rows {
                let p: SamplingParameters
                switch r % 5 {
                case 0: p = .greedy
                case 1: p = SamplingParameters(temperature: 0.7)
                case 2: p = SamplingParameters(temperature: 1.0, topK: 50)
                case 3: p = SamplingParameters(temperature: 0.9, topP: 0.9)
                default: p = SamplingParameters(temperature: 1.2, topK: 200, topP: 0.8)
                }
                draws.append(TokenDraw(parameters: p, uniform: UInt32(truncatingIfNeeded: rng.next() >> 40)))
            }
            let l = try DeviceBuffer(cuda, byteCount: logits.count * 4)
            try l.upload(logits)
            let params = try DeviceBuffer(cuda, byteCount: rows * 16)
            try params.upload(draws.flatMap(\.kernelArguments))
            let out = try DeviceBuffer(cuda, byteCount: rows * 4)
            try out.upload([Int32](repeating: -1, count: rows))
            try kernels.sample(logits: l.address, rows: rows, vocab: vocab, rowStride: vocab, params: params.address,
                               into: out.address, stream: nil)
            try device.synchronize()
            let ours = try out.download(Int32.self, count: rows)
            var greedyOK = 0, greedyRows = 0, agree = 0, valid = 0
            for r in 0..<rows {
                let reference = logits.withUnsafeBufferPointer {
                    sampleToken(UnsafeBufferPointer(rebasing: $0[(r * vocab)..<((r + 1) * vocab)]), draws[r])
                }
                if ours[r] >= 0 && Int(ours[r]) < vocab { valid += 1 }
                if ours[r] == reference { agree += 1 }
                if draws[r].parameters.temperature == 0 { greedyRows += 1; if ours[r] == reference { greedyOK += 1 } }
            }
            let ok = valid == rows && greedyOK == greedyRows && agree * 100 >= rows * 98
            if !ok { failures += 1 }
            say("\(ok ? "PASS" : "FAIL") sampler vocab \(vocab): greedy \(greedyOK)/\(greedyRows) exact, "
                  + "all modes \(agree)/\(rows) equal to the CPU rule, \(valid)/\(rows) valid ids")
        }
        // Distribution: one row, many draws; frequencies of the top tokens vs softmax probabilities (T = 1).
        let vocab = 1000
        var logits = [Float](repeating: 0, count: vocab)
        for i in logits.indices { logits[i] = (rng.nextSignedUnitFloat() + 1) * 2 }
        let rows = 20_000
        let l = try DeviceBuffer(cuda, byteCount: rows * vocab * 4)
        try l.upload(Array((0..<rows).map { _ in logits }.joined()))
        let params = try DeviceBuffer(cuda, byteCount: rows * 16)
        try params.upload((0..<rows).flatMap { _ -> [Int32] in
            TokenDraw(parameters: SamplingParameters(temperature: 1),
                      uniform: UInt32(truncatingIfNeeded: rng.next() >> 40)).kernelArguments
        })
        let out = try DeviceBuffer(cuda, byteCount: rows * 4)
        try kernels.sample(logits: l.address, rows: rows, vocab: vocab, rowStride: vocab, params: params.address,
                           into: out.address, stream: nil)
        try device.synchronize()
        var counts = [Int](repeating: 0, count: vocab)
        for t in try out.download(Int32.self, count: rows) { counts[Int(t)] += 1 }
        let top = logits.max()!
        let z = logits.reduce(0.0) { $0 + exp(Double($1 - top)) }
        var chi2 = 0.0
        for i in 0..<vocab {
            let expected = Double(rows) * exp(Double(logits[i] - top)) / z
            chi2 += (Double(counts[i]) - expected) * (Double(counts[i]) - expected) / expected
        }
        // 999 degrees of freedom: mean 999, sd ≈ 44.7; 1200 is 4.5 sd out.
        let ok = chi2 < 1200
        if !ok { failures += 1 }
        say("\(ok ? "PASS" : "FAIL") sampler distribution: χ² = \(fmt(chi2, 1)) over \(vocab) tokens, "
              + "\(rows) draws (bound 1200)")
        return failures
    }
}
