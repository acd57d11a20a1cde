import Randomness
import Testing
@testable import VAttention

func freshSeed() -> UInt64 { UInt64.random(in: 1...UInt64.max) }

func smallSpec(layout: KVCacheSpec.Layout, pageSize: Int, dtype: KVElementType = .fp16) -> KVCacheSpec {
    KVCacheSpec(layers: 3, kvHeads: 2, headDim: 16, dtype: dtype, maxSlots: 6, maxContext: 700,
                pageSize: pageSize, layout: layout)
}

/// Writes and checks a byte pattern unique to (request, layer, K/V, token, byte) through the manager's addresses.
struct PatternChecker {
    let manager: KVCacheManager
    var spec: KVCacheSpec { manager.spec }

    func byte(request: Int, layer: Int, kind: KVKind, token: Int, index: Int) -> UInt8 {
        var h = UInt64(request) &* 0x9E37_79B9_7F4A_7C15
        h ^= UInt64(layer &* 131 &+ kind.rawValue &* 7 &+ token &* 1_000_003 &+ index &* 31)
        h = (h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9
        return UInt8(truncatingIfNeeded: h >> 32)
    }

    var tokenBytes: Int { spec.kvHeads * spec.headDim * spec.dtype.byteCount }

    func write(request: Int, slot: Int, tokens: Range<Int>) {
        for layer in 0..<spec.layers {
            for kind in KVKind.allCases {
                let view = manager.view(layer: layer, kind)
                for t in tokens {
                    let p = UnsafeMutablePointer<UInt8>(bitPattern: view.byteAddress(slot: slot, token: t))!
                    for i in 0..<tokenBytes { p[i] = byte(request: request, layer: layer, kind: kind, token: t, index: i) }
                }
            }
        }
    }

    /// Returns the first mismatch, if any.
    func verify(request: Int, slot: Int, length: Int) -> String? {
        for layer in 0..<spec.layers {
            for kind in KVKind.allCases {
                let view = manager.view(layer: layer, kind)
                for t in 0..<length {
                    let p = UnsafePointer<UInt8>(bitPattern: view.byteAddress(slot: slot, token: t))!
                    for i in 0..<tokenBytes where p[i] != byte(request: request, layer: layer, kind: kind, token: t, index: i) {
                        return "request \(request) slot \(slot) layer \(layer) \(kind) token \(t) byte \(i)"
                    }
                }
            }
        }
        return nil
    }
}

@Suite("KVCacheManager on real host memory")
struct KVCacheManagerTests {
    @Test("random request lifecycles keep every token's bytes intact",
          arguments: KVCacheSpec.Layout.allCases, [4096, 65536, 2 << 20])
    func randomLifecycles(layout: KVCacheSpec.Layout, pageSize: Int) throws {
        for background in [false, true] {
            let seed = freshSeed()
            var rng = SplitMix64(seed: seed)
            let spec = smallSpec(layout: layout, pageSize: pageSize)
            // Room for roughly 2.5 full-length requests: reclaiming and out-of-pages both happen.
            let fullRequestPages = spec.pagesPerTensor(tokens: spec.maxContext) * spec.tensorCount
            let budget = (fullRequestPages * 5 / 2) * pageSize
            let manager = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: budget,
                                             policy: MapAheadPolicy(background: background, lookAheadTokens: 8))
            let checker = PatternChecker(manager: manager)
            var active: [Int: (request: Int, length: Int)] = [:]  // slot → request
            var nextRequest = 1
            var outOfPages = 0, reused = 0
            for op in 0..<400 {
                let roll = Int.random(in: 0..<10, using: &rng)
                if roll < 3, manager.hasFreeSlot {
                    let slot = try manager.allocateSlot(expectedLength: Int.random(in: 1...spec.maxContext, using: &rng))
                    if manager.stats.mappedPages > 0 { reused += 1 }
                    active[slot] = (nextRequest, 0)
                    nextRequest += 1
                } else if roll < 8, let (slot, req) = active.randomElement(using: &rng) {
                    let grow = Int.random(in: 1...60, using: &rng)
                    let newLength = min(spec.maxContext, req.length + grow)
                    let before = manager.stats
                    do {
                        try manager.step([(slot, newLength)])
                        checker.write(request: req.request, slot: slot, tokens: req.length..<newLength)
                        active[slot] = (req.request, newLength)
                    } catch KVCacheError.outOfPages {
                        outOfPages += 1
                        let after = manager.stats
                        #expect(after.mappedPages <= before.mappedPages + (background ? spec.tensorCount * 64 : 0),
                                "seed \(seed)")
                        #expect(try manager.length(of: slot) == req.length, "out of pages changed a length; seed \(seed)")
                        // Preempt: the scheduler frees someone else.
                        if let victim = active.keys.filter({ $0 != slot }).randomElement(using: &rng) {
                            try manager.free(victim)
                            active[victim] = nil
                        }
                    }
                } else if let (slot, _) = active.randomElement(using: &rng) {
                    try manager.free(slot)
                    active[slot] = nil
                }
                if op % 7 == 0 { manager.waitForBackgroundMapper() }
                let problems = manager.checkInvariants()
                #expect(problems.isEmpty, "seed \(seed) op \(op): \(problems)")
                if !problems.isEmpty { return }
                for (slot, req) in active where op % 3 == 0 || op == 399 {
                    if let bad = checker.verify(request: req.request, slot: slot, length: req.length) {
                        Issue.record("corrupted \(bad); seed \(seed) op \(op)")
                        return
                    }
                }
            }
            #expect(nextRequest > 20, "too few requests to mean anything; seed \(seed)")
            #expect(reused > 0, "no slot was ever reused with its pages; seed \(seed)")
            try manager.shutdown()
            _ = outOfPages
        }
    }

    @Test("out of pages is a typed error that leaves the state unchanged")
    func outOfPagesLeavesStateUnchanged() throws {
        let spec = smallSpec(layout: .perLayer, pageSize: 4096)
        let budget = spec.tensorCount * 4 * 4096  // 4 pages per tensor in all
        let m = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: budget,
                                   policy: MapAheadPolicy(background: false))
        let a = try m.allocateSlot()
        let b = try m.allocateSlot()
        let perPage = 4096 / spec.tokenBytesPerTensor
        try m.step([(a, 3 * perPage)])
        let before = m.stats
        #expect(throws: KVCacheError.outOfPages(needed: 2 * spec.tensorCount, available: spec.tensorCount)) {
            try m.step([(b, 2 * perPage)])
        }
        #expect(m.stats == before)
        #expect(try m.length(of: b) == 0)
        #expect(m.checkInvariants().isEmpty)
        #expect(try m.canGrow(b, to: perPage))
        #expect(try !m.canGrow(b, to: perPage + 1))
        try m.step([(b, perPage)])
        #expect(m.checkInvariants().isEmpty)
    }

    @Test("bad input gets a typed error and corrupts nothing")
    func badInput() throws {
        let spec = smallSpec(layout: .mega, pageSize: 4096)
        let m = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: 64 * 4096,
                                   policy: MapAheadPolicy(background: false))
        let s = try m.allocateSlot()
        try m.step([(s, 10)])
        let before = m.stats
        #expect(throws: KVCacheError.unknownSlot(99)) { try m.step([(99, 1)]) }
        #expect(throws: KVCacheError.unknownSlot(-1)) { try m.free(-1) }
        #expect(throws: KVCacheError.lengthOutOfRange(slot: s, length: 701, maxContext: 700)) { try m.step([(s, 701)]) }
        #expect(throws: KVCacheError.duplicateSlotInStep(s)) { try m.step([(s, 11), (s, 12)]) }
        let other = 1 - s == s ? 2 : (s == 0 ? 1 : 0)
        #expect(throws: KVCacheError.slotNotActive(other)) { try m.step([(other, 5)]) }
        try m.free(s)
        #expect(throws: KVCacheError.slotNotActive(s)) { try m.free(s) }
        #expect(m.stats.mappedPages == before.mappedPages)
        #expect(m.checkInvariants().isEmpty)
        try m.shutdown()
        #expect(throws: KVCacheError.shutDown) { try m.allocateSlot() }

        #expect(throws: KVCacheError.budgetTooSmall(budget: 4096, minimum: 2 * 4096)) {
            _ = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: 4096)
        }
        var odd = spec
        odd.pageSize = 5000
        #expect(throws: KVCacheError.self) { _ = try KVCacheManager(spec: odd, backend: HostMemoryBackend(), memoryBudget: 1 << 20) }
    }

    @Test("slots are chosen best-fit among idle slots that kept their pages")
    func bestFitReuse() throws {
        let spec = smallSpec(layout: .mega, pageSize: 4096)
        let perPage = 4096 / spec.tokenBytesPerTensor
        let m = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: 256 * 4096,
                                   policy: MapAheadPolicy(background: false))
        let small = try m.allocateSlot(), large = try m.allocateSlot(), medium = try m.allocateSlot()
        try m.step([(small, perPage), (large, 8 * perPage), (medium, 4 * perPage)])
        for s in [small, large, medium] { try m.free(s) }
        let mapped = m.stats.mappedPages
        #expect(try m.allocateSlot(expectedLength: 3 * perPage) == medium)
        #expect(try m.allocateSlot(expectedLength: spec.maxContext) == large)  // none fits: the one with most pages
        #expect(m.stats.mappedPages == mapped, "deferred reclamation keeps pages mapped")
        #expect(try m.step([(medium, 4 * perPage)]).pagesMapped == 0)
    }

    @Test("reclaim takes idle slots' pages first, then over-eager tails of active slots")
    func reclaimOrder() throws {
        let spec = smallSpec(layout: .mega, pageSize: 4096)
        let perPage = 4096 / spec.tokenBytesPerTensor
        let m = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: 64 * 4096,
                                   policy: MapAheadPolicy(background: false))
        let a = try m.allocateSlot(), b = try m.allocateSlot()
        try m.step([(a, 4 * perPage), (b, 4 * perPage)])
        try m.step([(b, 1)])  // b keeps 4 pages per tensor but needs 1: 3 over-eager
        try m.free(a)
        let freeBefore = m.stats.freePages
        #expect(try m.reclaim(pages: 8) == 8)  // all of a's
        #expect(m.stats.freePages == freeBefore + 8)
        #expect(try m.length(of: b) == 1)
        #expect(try m.reclaim(pages: 100) == 6)  // b's tails only, never its live page
        #expect(m.checkInvariants().isEmpty)
        #expect(try m.reclaim(pages: 1) == 0)
    }

    @Test("zero page: unbacked parts of a reservation read as zeros")
    func hostZeroPage() throws {
        let backend = HostMemoryBackend(zeroPage: true)
        let spec = smallSpec(layout: .perLayer, pageSize: 4096)
        let m = try KVCacheManager(spec: spec, backend: backend, memoryBudget: 64 * 4096,
                                   policy: MapAheadPolicy(background: false))
        let view = m.view(layer: 1, .value)
        let far = UnsafePointer<UInt8>(bitPattern: view.byteAddress(slot: 3, token: 600))!
        #expect(far[0] == 0 && far[17] == 0)
        let s = try m.allocateSlot()
        try m.step([(s, 5)])
        let p = UnsafeMutablePointer<UInt8>(bitPattern: view.byteAddress(slot: s, token: 0))!
        p[0] = 42
        #expect(p[0] == 42)
    }

    @Test("views address the same bytes in both layouts' strides")
    func viewStrides() throws {
        for layout in KVCacheSpec.Layout.allCases {
            let spec = smallSpec(layout: layout, pageSize: 4096, dtype: .fp32)
            let m = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: 128 * 4096,
                                       policy: MapAheadPolicy(background: false))
            let v0 = m.view(layer: 0, .key), v2 = m.view(layer: 2, .key)
            #expect(v0.headStride == spec.headDim)
            switch layout {
            case .perLayer:
                #expect(v0.tokenStride == spec.kvHeads * spec.headDim)
            case .mega:
                #expect(v0.tokenStride == spec.layers * spec.kvHeads * spec.headDim)
                #expect(v2.address - v0.address == UInt(2 * spec.kvHeads * spec.headDim * 4))
            }
            #expect(v0.slotStride * 4 == spec.slotBytes)
            #expect(spec.slotBytes % spec.pageSize == 0)
        }
    }
}

@Suite("Admission and preparation")
struct AdmissionTests {
    @Test("canAdmit counts whole pages per tensor; prepare lets the mapper back a prompt before its step")
    func admitAndPrepare() throws {
        let spec = smallSpec(layout: .perLayer, pageSize: 4096)  // 6 tensors, 64 tokens per page
        let perPage = 4096 / spec.tokenBytesPerTensor
        let m = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: spec.tensorCount * 3 * 4096,
                                   policy: MapAheadPolicy(background: true, lookAheadTokens: 0))
        #expect(m.canAdmit(tokens: 3 * perPage))
        #expect(!m.canAdmit(tokens: 3 * perPage + 1))
        let s = try m.allocateSlot()
        try m.mapAhead(s, tokens: 2 * perPage)
        m.waitForBackgroundMapper()
        #expect(m.stats.memory.backgroundMaps == 2 * spec.tensorCount)
        #expect(try m.step([(s, 2 * perPage)]).pagesMapped == 0, "prepared pages are found mapped")
        #expect(!m.canAdmit(tokens: perPage + 1))
        #expect(m.checkInvariants().isEmpty)
    }
}
