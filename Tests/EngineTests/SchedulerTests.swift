import Engine
import Kernels
import Model
import Testing
import VAttention

/// A model that needs no weights: it writes each chunk's token ids into the layer-0 K cache through its binding (the
/// real store's memory: an unbacked page would fault), and "samples" a hash of the whole sequence read back from
/// the cache. A scheduler that resumed a preempted request at the wrong place, skipped a chunk or reserved too
/// little would produce other tokens than a run with memory to spare.
final class CacheHashRunner: ModelRunner {
    let hyperparameters = DummyWeights.knownShape("smollm2-135m")!
    var deviceDescription: String { "fake" }
    var kvLocation: MemoryLocation { .host }
    private(set) var steps: [[SequenceChunk]] = []

    func run(_ chunks: [SequenceChunk], kv: any KVStore, sampling: [TokenDraw]) throws -> [TokenID] {
        steps.append(chunks)
        let binding = kv.binding(layer: 0)
        var out: [TokenID] = []
        for c in chunks {
            for (i, t) in c.tokens.enumerated() { Self.element(binding, c.slot, c.start + i).pointee = Float(t) }
            guard c.wantsLogits else { continue }
            var h: UInt64 = 1469598103934665603
            for p in 0..<(c.start + c.tokens.count) {
                h = (h ^ UInt64(Self.element(binding, c.slot, p).pointee)) &* 1099511628211
            }
            out.append(TokenID(h % 1000) + 1)
        }
        #expect(out.count == sampling.count)
        return out
    }

    /// Element 0 of token `token`'s key in `slot`.
    static func element(_ b: KVLayerBinding, _ slot: Int, _ token: Int) -> UnsafeMutablePointer<Float> {
        switch b {
        case .strided(let k, _):
            return UnsafeMutablePointer(bitPattern: k.byteAddress(slot: slot, token: token))!
        case .paged(let p):
            let block = Int(p.blockTable(slot: slot)[token / p.blockSize])
            let index = (block * p.blockSize + token % p.blockSize) * p.kvHeads * p.headDim
            return UnsafeMutablePointer<Float>(bitPattern: p.keys)! + index
        }
    }
}

@Suite("Scheduler and engine with a fake model: admission, chunked prefill, preemption, cancellation, memory")
struct SchedulerTests {
    /// 4-KiB pages of 32-byte tokens: 128 tokens a page per tensor; one layer, so two tensors.
    static func vattention(slots: Int = 4, maxContext: Int = 1024, pages: Int = 64) throws -> VAttentionKVStore {
        let spec = KVCacheSpec(layers: 1, kvHeads: 1, headDim: 8, dtype: .fp32, maxSlots: slots,
                               maxContext: maxContext, pageSize: 4096)
        return VAttentionKVStore(manager: try KVCacheManager(spec: spec, backend: HostMemoryBackend(),
                                                            memoryBudget: pages * 2 * 4096))
    }

    static func paged(slots: Int = 4, maxContext: Int = 1024, blocks: Int = 256) -> PagedKVStore {
        PagedKVStore(layers: 1, kvHeads: 1, headDim: 8, elementType: .fp32, slots: slots, maxContext: maxContext,
                     blockSize: 16, memoryBudget: blocks * 16 * 8 * 4 * 2)
    }

    static func prompt(_ n: Int, seed: Int) -> [TokenID] { (0..<n).map { TokenID(($0 * 7 + seed * 13) % 500 + 1) } }

    static func run(_ kv: any KVStore, prompts: [[TokenID]], maxTokens: Int, budget: Int = 64,
                    maxRunning: Int = 8) throws -> (LLMEngine, [[TokenID]]) {
        let e = LLMEngine(model: CacheHashRunner(), tokenizer: nil, kv: kv,
                          configuration: EngineConfiguration(tokenBudget: budget, maxRunning: maxRunning))
        let ids = try prompts.map { try e.add(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: maxTokens)) }
        var steps = 0
        while e.hasWork {
            _ = try e.step()
            steps += 1
            #expect(steps < 10_000, "the engine stopped making progress")
            if steps >= 10_000 { break }
        }
        return (e, ids.map { e.output(of: $0)! })
    }

    @Test("chunked prefill under the token budget; decodes come first; logits only at a chunk that ends the prompt")
    func chunkedPrefill() throws {
        let kv = try Self.vattention()
        let s = Scheduler(kv: kv, tokenBudget: 32, maxRunning: 4)
        try s.add(id: 0, prompt: Self.prompt(70, seed: 0), maxTokens: 4)
        var plan = try s.schedule()
        #expect(plan.chunks.map(\.tokens.count) == [32] && plan.chunks[0].start == 0 && !plan.chunks[0].wantsLogits)
        s.update(plan, sampled: [])
        try s.add(id: 1, prompt: Self.prompt(40, seed: 1), maxTokens: 4)
        plan = try s.schedule()
        #expect(plan.chunks.map(\.start) == [32], "request 0's second chunk fills the budget")
        s.update(plan, sampled: [])
        plan = try s.schedule()
        // Request 0's last 6 tokens want logits; request 1 (admitted ahead on this on-demand store) fills the rest.
        #expect(plan.requests == [0, 1] && plan.chunks.map(\.tokens.count) == [6, 26])
        #expect(plan.chunks.map(\.wantsLogits) == [true, false] && plan.sampledChunks == [0])
        s.update(plan, sampled: [9])
        plan = try s.schedule()
        #expect(plan.requests == [0, 1], "the decode first, then the rest of the prompt")
        #expect(plan.chunks[0] == SequenceChunk(slot: s.slot(of: 0)!, start: 70, tokens: [9], wantsLogits: true))
        #expect(plan.chunks[1].start == 26 && plan.chunks[1].tokens.count == 14 && plan.chunks[1].wantsLogits)
        #expect(s.output(of: 0) == [9])
    }

    @Test("admission stops at maxRunning and at the slots; everyone finishes; slots all come back")
    func admission() throws {
        let kv = try Self.vattention(slots: 3)
        let prompts = (0..<7).map { Self.prompt(20 + $0, seed: $0) }
        let (e, out) = try Self.run(kv, prompts: prompts, maxTokens: 5, maxRunning: 2)
        #expect(out.allSatisfy { $0.count == 5 })
        let runner = e.model as! CacheHashRunner
        #expect(runner.steps.allSatisfy { Set($0.map(\.slot)).count == $0.count }, "a slot twice in one step")
        #expect(runner.steps.map { $0.count }.max()! <= 2, "more than maxRunning requests in a step")
        #expect(kv.memory.activeSlots == 0)
        let (_, alone) = try Self.run(try Self.vattention(slots: 3), prompts: [prompts[6]], maxTokens: 5)
        #expect(alone[0] == out[6], "batching changed a request's tokens")
    }

    @Test("preemption by recompute under a tight pool gives the same tokens as a roomy one; vAttention and paged")
    func preemptionAndResume() throws {
        let prompts = (0..<6).map { Self.prompt(60 + 10 * $0, seed: $0) }
        let (_, roomy) = try Self.run(try Self.vattention(slots: 6, pages: 64), prompts: prompts, maxTokens: 120)
        // 4 pages per tensor (512 tokens) for six requests that grow to 170–220 tokens each.
        let (tight, out) = try Self.run(try Self.vattention(slots: 6, pages: 4), prompts: prompts, maxTokens: 120)
        #expect(out == roomy)
        #expect(tight.stats.preemptions > 0, "the pool was meant to force preemption")
        let (pagedTight, pagedOut) = try Self.run(Self.paged(slots: 6, blocks: 32), prompts: prompts, maxTokens: 120)
        #expect(pagedOut == roomy, "paged under pressure")
        #expect(pagedTight.stats.preemptions > 0)
    }

    @Test("cancelling a running request frees its slot at once and the next request takes it")
    func cancellation() throws {
        let kv = try Self.vattention(slots: 1)
        let e = LLMEngine(model: CacheHashRunner(), tokenizer: nil, kv: kv,
                          configuration: EngineConfiguration(tokenBudget: 64, maxRunning: 1))
        let a = try e.add(prompt: Self.prompt(10, seed: 1), parameters: SamplingParameters(temperature: 0, maxTokens: 50))
        let b = try e.add(prompt: Self.prompt(10, seed: 2), parameters: SamplingParameters(temperature: 0, maxTokens: 3))
        _ = try e.step()
        #expect(e.scheduler.phase(of: a) == .running && e.scheduler.phase(of: b) == .waiting)
        try e.cancel(a)
        #expect(e.finishReason(of: a) == .cancelled && kv.memory.activeSlots == 0)
        #expect(e.output(of: a)!.count == 1, "the cancelled request keeps what it produced")
        try e.runToCompletion()
        #expect(e.finishReason(of: b) == .length && e.output(of: b)!.count == 3)
        try e.cancel(a)  // cancelling a finished request changes nothing
        #expect(e.stats.finished == 2)
    }

    @Test("admission ahead: on a store that maps on demand the next request gets its slot a step early, mapped in the background")
    func admissionAhead() throws {
        let kv = try Self.vattention(slots: 4)
        let s = Scheduler(kv: kv, tokenBudget: 16, maxRunning: 4)
        try s.add(id: 0, prompt: Self.prompt(16, seed: 0), maxTokens: 2)
        try s.add(id: 1, prompt: Self.prompt(100, seed: 1), maxTokens: 2)
        let plan = try s.schedule()
        #expect(plan.requests == [0])
        #expect(s.phase(of: 1) == .admitted && s.admittedCount == 1 && s.slot(of: 1) != nil)
        s.update(plan, sampled: [5])
        #expect(try s.schedule().requests == [0, 1], "the request admitted ahead runs next step")

        let paged = Scheduler(kv: Self.paged(), tokenBudget: 16, maxRunning: 4)
        try paged.add(id: 0, prompt: Self.prompt(16, seed: 0), maxTokens: 2)
        try paged.add(id: 1, prompt: Self.prompt(100, seed: 1), maxTokens: 2)
        _ = try paged.schedule()
        #expect(paged.admittedCount == 0 && paged.phase(of: 1) == .waiting, "nothing to map ahead for blocks")
    }

    @Test("out of memory: a lone request that fills the pool ends with .length; prompts the pool can't hold are refused")
    func outOfPages() throws {
        // One page per tensor: 128 tokens in all, context 1,024.
        let kv = try Self.vattention(slots: 2, pages: 1)
        #expect(kv.capacityTokens == 128)
        let e = LLMEngine(model: CacheHashRunner(), tokenizer: nil, kv: kv,
                          configuration: EngineConfiguration(tokenBudget: 64, maxRunning: 2))
        #expect(throws: EngineError.promptTooLargeForMemory(tokens: 200, capacity: 128)) {
            try e.add(prompt: Self.prompt(200, seed: 0), parameters: .greedy)
        }
        let id = try e.add(prompt: Self.prompt(100, seed: 0), parameters: SamplingParameters(temperature: 0, maxTokens: 500))
        var last: EngineEvent?
        while e.hasWork { for ev in try e.step() { last = ev } }
        #expect(last?.finished == .length && e.stats.endedByMemory == 1)
        #expect(e.output(of: id)!.count == 128 - 100 + 1, "it ran until the pool was full")
        #expect(e.maxContext == 128)
    }
}
