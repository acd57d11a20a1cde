import Engine
import Kernels
import Model
import Testing
import VAttention

/// A KV pool smaller than the context (issue 14): `--kv-mib 8 --slots 8` holds ~170 tokens for one request while the
/// context says 2048. A prompt that can never fit is refused by `add`; a request that outgrows the pool while alone
/// ends with `.length` instead of a thrown step; and the engine never spins: every scenario ends within a bounded
/// number of steps.
@Suite("KV pool smaller than the context", .enabled(if: Fixtures.runModelTests, Fixtures.skipReason))
struct MemoryLimitTests {
    /// vAttention, per-layer 64 KiB pages: 60 tensors × 2 pages = 2 pages per tensor = 170 tokens (768 B per token).
    static func smallVAttention(_ model: CPULlamaModel) throws -> VAttentionKVStore {
        try Fixtures.vattentionStore(model, slots: 8, maxContext: 2048, budget: 60 * 2 * (64 << 10))
    }

    /// Paged, 16-token blocks: 11 blocks = 176 tokens.
    static func smallPaged(_ model: CPULlamaModel) -> PagedKVStore {
        let hp = model.hyperparameters
        let blockBytes = 16 * hp.headCountKV * hp.headDim * 4 * 2 * hp.blockCount
        return PagedKVStore(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, elementType: .fp32,
                            slots: 8, maxContext: 2048, blockSize: 16, memoryBudget: 11 * blockBytes)
    }

    static func stores(_ model: CPULlamaModel) throws -> [any KVStore] { [try smallVAttention(model), smallPaged(model)] }

    func engine(_ kv: any KVStore) throws -> LLMEngine {
        let (_, model, tokenizer) = try Fixtures.loaded.get()
        return LLMEngine(model: model, tokenizer: tokenizer, kv: kv,
                         configuration: EngineConfiguration(tokenBudget: 64, maxRunning: 8))
    }

    /// Ordinary tokens (a repeated sentence), `n` of them.
    func prompt(_ n: Int) throws -> [TokenID] {
        let (_, _, tokenizer) = try Fixtures.loaded.get()
        let sentence = tokenizer.encode("The quick brown fox jumps over the lazy dog. ")
        return Array((0..<(n / sentence.count + 1)).flatMap { _ in sentence }.prefix(n))
    }

    /// Steps until the engine is idle; fails (instead of hanging) past `limit` steps. Returns the events.
    func drive(_ e: LLMEngine, limit: Int) throws -> [EngineEvent] {
        var events: [EngineEvent] = []
        var steps = 0
        while e.hasWork {
            steps += 1
            guard steps <= limit else {
                Issue.record("still busy after \(limit) steps: \(e.waitingCount) waiting, \(e.runningCount) running")
                return events
            }
            events += try e.step()
        }
        return events
    }

    @Test func capacityIsWhatThePoolHoldsForOneRequest() throws {
        let (_, model, _) = try Fixtures.loaded.get()
        let stores = try Self.stores(model)
        #expect(stores[0].capacityTokens == 170)
        #expect(stores[1].capacityTokens == 176)
        for kv in stores {
            #expect(try engine(kv).maxContext == kv.capacityTokens, "\(kv.name)")
        }
    }

    @Test("a prompt the pool can never hold is refused by add, and blocks nothing behind it")
    func promptLargerThanThePoolIsRefused() throws {
        let (_, model, _) = try Fixtures.loaded.get()
        for kv in try Self.stores(model) {
            let e = try engine(kv)
            #expect(throws: EngineError.promptTooLargeForMemory(tokens: 300, capacity: kv.capacityTokens), "\(kv.name)") {
                _ = try e.add(prompt: try prompt(300), parameters: .greedy)
            }
            // Whatever add did, the engine must not spin, and a small request behind it is served.
            let small = try e.add(prompt: try prompt(8), parameters: SamplingParameters(temperature: 0, maxTokens: 4))
            _ = try drive(e, limit: 40)
            #expect(e.output(of: small)?.count == 4, "\(kv.name)")
            #expect(kv.memory.activeSlots == 0)
        }
    }

    @Test("a lone request that outgrows the pool ends with .length, not an error")
    func loneRequestEndsWithLength() throws {
        let (_, model, _) = try Fixtures.loaded.get()
        for kv in try Self.stores(model) {
            let e = try engine(kv)
            let id = try e.add(prompt: try prompt(150), parameters: SamplingParameters(temperature: 0, maxTokens: 200))
            let events = try drive(e, limit: 100)
            #expect(e.finishReason(of: id) == .length, "\(kv.name)")
            #expect(events.last?.finished == .length)
            // It ran until the pool was full: prompt + output within a token of the capacity.
            let total = 150 + (e.output(of: id)?.count ?? 0)
            #expect(total >= kv.capacityTokens - 1 && total <= kv.capacityTokens + 1, "\(kv.name): \(total) tokens")
            #expect(e.stats.endedByMemory == 1)
            #expect(kv.memory.activeSlots == 0)
        }
    }

    @Test("two requests that each need most of the pool: one after the other, no preemption livelock")
    func requestsThatEachFillThePoolTakeTurns() throws {
        let (_, model, _) = try Fixtures.loaded.get()
        for kv in try Self.stores(model) {
            let e = try engine(kv)
            let parameters = SamplingParameters(temperature: 0, maxTokens: 100)
            let a = try e.add(prompt: try prompt(120), parameters: parameters)
            let b = try e.add(prompt: try prompt(130), parameters: parameters)
            _ = try drive(e, limit: 200)
            #expect(e.finishReason(of: a) == .length && e.finishReason(of: b) == .length, "\(kv.name)")
            #expect((e.output(of: a)?.count ?? 0) > 0 && (e.output(of: b)?.count ?? 0) > 0, "\(kv.name)")
            #expect(kv.memory.activeSlots == 0)
        }
    }

    @Test("a zero token budget or batch is not an engine that never schedules")
    func zeroBudgetIsClamped() throws {
        let (_, model, tokenizer) = try Fixtures.loaded.get()
        let e = LLMEngine(model: model, tokenizer: tokenizer, kv: try Fixtures.vattentionStore(model),
                          configuration: EngineConfiguration(tokenBudget: 0, maxRunning: 0))
        let id = try e.add(prompt: try prompt(4), parameters: SamplingParameters(temperature: 0, maxTokens: 2))
        _ = try drive(e, limit: 20)
        #expect(e.output(of: id)?.count == 2)
    }
}
