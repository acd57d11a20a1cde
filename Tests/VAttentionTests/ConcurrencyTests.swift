import Randomness
import Support
import Synchronization
import Testing
@testable import VAttention

@Suite("Background mapper hand-off")
struct ConcurrencyTests {
    /// The mapper maps ahead while `step` runs in a tight loop on another thread and a third thread reads stats:
    /// run under `swift test --sanitize=thread` in CI. Every step must find its slots backed (invariants) and the
    /// mapper must have done real work (background maps > 0), or the test proves nothing.
    @Test("step in a tight loop while the mapper maps ahead")
    func stressStepAgainstMapper() throws {
        let seed = freshSeed()
        var rng = SplitMix64(seed: seed)
        let spec = KVCacheSpec(layers: 4, kvHeads: 2, headDim: 16, dtype: .fp16, maxSlots: 8, maxContext: 2000,
                               pageSize: 4096, layout: .perLayer)
        let budget = spec.tensorCount * spec.maxPagesPerTensor * 5 * 4096
        let m = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: budget,
                                   policy: MapAheadPolicy(background: true, lookAheadTokens: 64))
        let stop = Atomic<Bool>(false)
        let reader = OSThread {
            while !stop.load(ordering: .relaxed) {
                let st = m.stats
                precondition(st.freePages + st.mappedPages == st.poolPages)
                _ = m.freeTokenCapacity
            }
        }
        var lengths: [Int: Int] = [:]
        var problems: [String] = []
        for i in 0..<3000 {
            if lengths.count < 6, Int.random(in: 0..<20, using: &rng) == 0 {
                lengths[try m.allocateSlot(expectedLength: 100)] = 0
            }
            if let (slot, _) = lengths.randomElement(using: &rng), Int.random(in: 0..<60, using: &rng) == 0 {
                try m.free(slot)
                lengths[slot] = nil
            }
            var batch: [(slot: Int, length: Int)] = []
            for (slot, len) in lengths {
                let grow = len == 0 ? Int.random(in: 1...300, using: &rng) : 1  // prefill, then decode
                lengths[slot] = min(spec.maxContext, len + grow)
                batch.append((slot, lengths[slot]!))
            }
            do {
                try m.step(batch)
            } catch KVCacheError.outOfPages {
                let victim = lengths.keys.max()!
                try m.free(victim)
                lengths[victim] = nil
                continue
            }
            if i % 25 == 0 {
                problems += m.checkInvariants()
                if !problems.isEmpty { break }
            }
        }
        stop.store(true, ordering: .relaxed)
        reader.join()
        #expect(problems.isEmpty, "seed \(seed): \(problems.prefix(3))")
        let st = m.stats
        #expect(st.memory.backgroundMaps > 0, "the mapper never ran; seed \(seed)")
        #expect(st.backgroundErrors == 0, "\(st.lastBackgroundError ?? "")")
        try m.shutdown()
    }

    @Test("with look-ahead, decode steps find their next page already mapped")
    func lookAheadTakesMappingOffTheCriticalPath() throws {
        let spec = KVCacheSpec(layers: 2, kvHeads: 1, headDim: 64, dtype: .fp32, maxSlots: 4, maxContext: 4096,
                               pageSize: 4096, layout: .perLayer)  // 16 tokens per page
        let m = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: 4096 * 4096,
                                   policy: MapAheadPolicy(background: true, lookAheadTokens: 32))
        let s = try m.allocateSlot()
        try m.step([(s, 1)])
        var criticalPages = 0
        for len in 2...600 {
            m.waitForBackgroundMapper()  // stands in for the model iteration the mapper overlaps with
            criticalPages += try m.step([(s, len)]).pagesMapped
        }
        #expect(criticalPages == 0)
        #expect(m.stats.memory.backgroundMaps >= spec.pagesPerTensor(tokens: 600) * spec.tensorCount - spec.tensorCount)
    }
}
