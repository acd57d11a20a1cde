import Engine
import Kernels
import Model
import Testing
import VAttention

@Suite("Continuous batching engine on SmolLM2", .enabled(if: Fixtures.runModelTests, Fixtures.skipReason))
struct EngineTests {
    static let prompts = [
        "The capital of France is", "def fibonacci(n):", "Once upon a time,", "1, 2, 3, 4,",
        "The quick brown fox", "Water boils at", "In 1969, humans", "Swift is a programming language",
    ]

    func engine(_ kv: any KVStore, budget: Int = 64) throws -> LLMEngine {
        let (_, model, tokenizer) = try Fixtures.loaded.get()
        return LLMEngine(model: model, tokenizer: tokenizer, kv: kv,
                         configuration: EngineConfiguration(tokenBudget: budget, maxRunning: 8))
    }

    func run(_ e: LLMEngine, _ prompts: [String], maxTokens: Int = 10) throws -> [[TokenID]] {
        let ids = try prompts.map {
            try e.add(prompt: e.tokenizer!.encode($0), parameters: SamplingParameters(temperature: 0, maxTokens: maxTokens))
        }
        try e.runToCompletion()
        return ids.map { e.output(of: $0)! }
    }

    func paged(_ model: CPULlamaModel, blockSize: Int = 16, budget: Int = 64 << 20) -> PagedKVStore {
        let hp = model.hyperparameters
        return PagedKVStore(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, elementType: .fp32,
                            slots: 8, maxContext: 1024, blockSize: blockSize, memoryBudget: budget)
    }

    @Test("a batch of concurrent requests = each request alone; vAttention = paged; memory pressure changes nothing")
    func batchingPagingAndPreemptionKeepOutputs() throws {
        let (_, model, _) = try Fixtures.loaded.get()
        let alone = try Self.prompts.map { p in try run(engine(Fixtures.vattentionStore(model)), [p])[0] }
        for out in alone { #expect(out.count == 10) }

        let batched = try run(engine(Fixtures.vattentionStore(model)), Self.prompts)
        #expect(batched == alone, "batched vs alone")

        let pagedOut = try run(engine(paged(model)), Self.prompts)
        #expect(pagedOut == alone, "paged vs vAttention")

        // 64 KB pages × 60 tensors; room for ~2 short requests at a time: admission waits and steps preempt.
        let tight = try engine(Fixtures.vattentionStore(model, budget: 60 * 3 * (64 << 10)), budget: 16)
        let pressured = try run(tight, Self.prompts)
        #expect(pressured == alone, "under memory pressure")
        #expect(tight.stats.preemptions > 0 || tight.stats.steps > 0)
        let tinyPaged = try engine(paged(model, budget: 30 * 2 * 16 * 3 * 64 * 4 * 6), budget: 16)
        #expect(try run(tinyPaged, Self.prompts) == alone, "paged under memory pressure")
    }

    @Test("preemption by recompute really happens under a tiny budget, and loses nothing")
    func preemption() throws {
        let (_, model, _) = try Fixtures.loaded.get()
        let alone = try Self.prompts.prefix(4).map { p in try run(engine(Fixtures.vattentionStore(model)), [p], maxTokens: 100)[0] }
        // A page holds 85 tokens per tensor: 4 requests growing past 85 tokens need 8 pages per tensor; there are 5.
        let e = try engine(Fixtures.vattentionStore(model, budget: 60 * 5 * (64 << 10)), budget: 32)
        let out = try run(e, Array(Self.prompts.prefix(4)), maxTokens: 100)
        #expect(out == alone)
        #expect(e.stats.preemptions > 0, "the budget was meant to force preemption")
    }

    @Test("stop strings, max tokens, seeds, cancellation")
    func requestControls() throws {
        let (_, model, tokenizer) = try Fixtures.loaded.get()
        let kv = try Fixtures.vattentionStore(model)
        let e = try engine(kv)
        let prompt = tokenizer.encode("1, 2, 3, 4,")
        let free = try e.add(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 12))
        try e.runToCompletion()
        let full = e.text(of: free)!
        #expect(e.finishReason(of: free) == .length)
        let cut = String(full.dropFirst(3).prefix(2))  // a string that occurs in the greedy text
        let stopped = try e.add(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 12, stop: [cut]))
        try e.runToCompletion()
        #expect(e.finishReason(of: stopped) == .stop)
        #expect(full.hasPrefix(e.text(of: stopped)!) && !e.text(of: stopped)!.contains(cut))

        let sampled = SamplingParameters(temperature: 0.9, topK: 40, topP: 0.95, seed: 1234, maxTokens: 12)
        let a = try e.add(prompt: prompt, parameters: sampled), b = try e.add(prompt: prompt, parameters: sampled)
        try e.runToCompletion()
        #expect(e.output(of: a) == e.output(of: b), "same seed, same tokens")

        let c = try e.add(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 100))
        _ = try e.step()
        try e.cancel(c)
        #expect(e.finishReason(of: c) == .cancelled)
        #expect(!e.hasWork)
        #expect(kv.manager.stats.memory.activeSlots == 0, "every slot is free again")
        #expect(throws: EngineError.emptyPrompt) { try e.add(prompt: [], parameters: .greedy) }
        #expect(throws: EngineError.promptTooLong(tokens: 2000, context: 1024)) {
            try e.add(prompt: Array(repeating: 1, count: 2000), parameters: .greedy)
        }
    }
}
