import Support
import Synchronization

/// vAttention: each layer's K and V live in one contiguous virtual tensor per layout (see `KVCacheSpec.Layout`), and
/// physical pages from a pool made at start are mapped underneath as requests grow.
///
/// Life of a request: `allocateSlot(expectedLength:)` → `step(_:)` before every model iteration (maps what the new
/// lengths need, synchronously, then lets the background mapper map ahead) → `free(slot)` (pages stay mapped for the
/// next request in that slot: deferred reclamation) . Pages are reclaimed from idle slots first, then from the
/// over-eager tails of active ones, only when the pool runs dry.
///
/// Thread safety: all state sits behind one `Mutex`; the background mapper takes it for one page at a time, so a
/// `step` waits at most one map call for it. Backend calls happen under that lock, which keeps the bookkeeping and the
/// memory system in lock-step (no page is ever visible to two owners).
public final class KVCacheManager: Sendable {
    public let spec: KVCacheSpec
    public let backend: any MemoryBackend
    public let policy: MapAheadPolicy
    /// Physical pages in the pool (mapped or free).
    public let totalPages: Int
    private let tensorBases: [UInt]
    private let core: Core
    private let mapper: OSThread?

    /// Creates the virtual tensors and the physical pool.
    /// - Parameter memoryBudget: bytes of physical memory for KV; `budget / pageSize` pages are created up front.
    public init(spec: KVCacheSpec, backend: any MemoryBackend, memoryBudget: Int,
                policy: MapAheadPolicy = MapAheadPolicy()) throws {
        try KVCacheManager.validate(spec, granularity: backend.granularity)
        guard (0...(1 << 40)).contains(policy.lookAheadTokens) else {
            throw KVCacheError.invalidSpec("look-ahead \(policy.lookAheadTokens) tokens is outside 0...\(1 << 40)")
        }
        let pages = memoryBudget / spec.pageSize
        guard pages >= spec.tensorCount else {
            throw KVCacheError.budgetTooSmall(budget: memoryBudget, minimum: spec.tensorCount * spec.pageSize)
        }
        self.spec = spec
        self.backend = backend
        self.policy = policy
        self.totalPages = pages
        try backend.bindCurrentThread()
        if let limit = backend.physicalMemoryLimit, memoryBudget > limit {
            throw KVCacheError.invalidSpec("memory budget \(formatBytes(memoryBudget)) exceeds the \(formatBytes(limit)) "
                                           + "of physical memory the \(backend.name) backend has")
        }
        guard pages <= KVCacheManager.maxPages else {
            throw KVCacheError.invalidSpec("memory budget \(formatBytes(memoryBudget)) is \(pages) pages of "
                + "\(formatBytes(spec.pageSize)); at most \(KVCacheManager.maxPages) pages (use larger pages)")
        }

        var bases: [UInt] = []
        do {
            for _ in 0..<spec.tensorCount { bases.append(try backend.reserve(bytes: spec.tensorBytes)) }
        } catch {
            for b in bases { try? backend.releaseReservation(address: b, bytes: spec.tensorBytes) }
            throw error
        }
        let pool: [PhysicalPage]
        do {
            pool = try backend.createPages(count: pages, pageSize: spec.pageSize)
        } catch {
            for b in bases { try? backend.releaseReservation(address: b, bytes: spec.tensorBytes) }
            throw error
        }
        tensorBases = bases
        core = Core(spec: spec, backend: backend, bases: bases, pool: pool, policy: policy)
        if policy.background {
            let core = self.core
            mapper = OSThread { core.runMapper() }
        } else {
            mapper = nil
        }
    }

    deinit {
        try? shutdown()
    }

    /// The most virtual address space all tensors together may reserve (2^47: the user half of an x86-64 or
    /// AArch64 address space; a GPU's is no larger). Every size the manager derives from a spec (slot, tensor and
    /// reservation bytes, page counts) then fits an `Int` with room to spare, so none of its arithmetic can trap.
    public static let maxReservedBytes = 1 << 47
    /// The most physical pages one pool may have (its bookkeeping is an array of them, made at start-up).
    public static let maxPages = 1 << 26

    /// Refuses a spec whose sizes are not positive or whose derived sizes overflow or exceed `maxReservedBytes`,
    /// with a message naming the field: the C ABI hands specs straight from other languages.
    static func validate(_ spec: KVCacheSpec, granularity: Int) throws {
        func fail(_ why: String) throws -> Never { throw KVCacheError.invalidSpec(why) }
        if spec.layers <= 0 || spec.kvHeads <= 0 || spec.headDim <= 0 { try fail("layers, kvHeads and headDim must be > 0") }
        if spec.maxSlots <= 0 || spec.maxContext <= 0 { try fail("maxSlots and maxContext must be > 0") }
        if spec.pageSize <= 0 || spec.pageSize % granularity != 0 {
            try fail("page size \(spec.pageSize) is not a multiple of the backend's granularity \(granularity)")
        }
        let limit = maxReservedBytes
        if spec.pageSize > limit { try fail("page size \(spec.pageSize) is larger than \(formatBytes(limit))") }
        /// a × b, or a failure naming what overflowed.
        func times(_ a: Int, _ b: Int, _ what: String) throws -> Int {
            let (r, overflow) = a.multipliedReportingOverflow(by: b)
            if overflow || r > limit {
                try fail("\(what) (\(a) × \(b)) exceeds \(formatBytes(limit)) of address space")
            }
            return r
        }
        let perLayer = try times(try times(spec.kvHeads, spec.headDim, "kvHeads × headDim"), spec.dtype.byteCount,
                                 "bytes per token and layer")
        let token = spec.layout == .perLayer ? perLayer : try times(perLayer, spec.layers, "bytes per token (mega)")
        let slot = try times(spec.maxContext, token, "bytes per slot (maxContext × bytes per token)")
        let slotRounded = roundUp(slot, to: spec.pageSize)  // both ≤ 2^47: no overflow
        let tensor = try times(slotRounded, spec.maxSlots, "bytes per tensor (maxSlots × bytes per slot)")
        _ = try times(tensor, spec.tensorCount, "reserved bytes (tensors × bytes per tensor)")
    }

    // MARK: Slots

    /// Takes a free slot for a request expected to reach `expectedLength` tokens. Prefers the idle slot whose
    /// still-mapped pages fit best (fewest pages that still cover the request), else the one with the most pages.
    public func allocateSlot(expectedLength: Int = 0) throws -> Int {
        try core.state.withLock { s in
            try s.checkOpen()
            guard expectedLength >= 0, expectedLength <= spec.maxContext else {
                throw KVCacheError.lengthOutOfRange(slot: -1, length: expectedLength, maxContext: spec.maxContext)
            }
            let need = spec.pagesPerTensor(tokens: expectedLength)
            var best: (slot: Int, pages: Int)?
            var largest: (slot: Int, pages: Int)?
            for i in s.slots.indices where !s.slots[i].active {
                let have = s.slots[i].minPages
                if have >= need, best == nil || have < best!.pages { best = (i, have) }
                if largest == nil || have > largest!.pages { largest = (i, have) }
            }
            guard let chosen = best ?? largest else { throw KVCacheError.noFreeSlot }
            s.slots[chosen.slot].active = true
            s.slots[chosen.slot].length = 0
            s.slots[chosen.slot].mapAheadTo = 0
            return chosen.slot
        }
    }

    /// Ends the request in `slot`. Its pages stay mapped for the next request (deferred reclamation); a fence marks the
    /// device work queued so far, which must finish before any of them is unmapped. Call after the last kernel that
    /// reads this slot has been queued.
    public func free(_ slot: Int) throws {
        let fence = try backend.recordFence()
        try core.state.withLock { s in
            try s.checkOpen()
            try s.checkActive(slot)
            s.slots[slot].active = false
            s.slots[slot].length = 0
            s.slots[slot].fence = fence
        }
    }

    /// Asks the background mapper to back `slot` up to `tokens` ahead of time — e.g. the prompt of a request admitted
    /// now whose prefill runs next iteration — so that step finds the pages mapped. Never maps synchronously and never
    /// reclaims from active requests for it; `step` still guarantees correctness if the mapper has not finished.
    public func mapAhead(_ slot: Int, tokens: Int) throws {
        try core.state.withLock { s in
            try s.checkOpen()
            try s.checkActive(slot)
            guard tokens >= 0, tokens <= spec.maxContext else {
                throw KVCacheError.lengthOutOfRange(slot: slot, length: tokens, maxContext: spec.maxContext)
            }
            s.slots[slot].mapAheadTo = tokens
            s.scheduleLookAhead(spec: spec, policy: policy)
        }
        if policy.background { core.signal.post() }
    }

    /// Makes every listed slot backed up to its new length (in every tensor) before the model iteration that uses it.
    /// What is missing is mapped now — the critical path — reclaiming pages if the pool is empty; then the background
    /// mapper is asked to map ahead. Throws `outOfPages` (state unchanged) when even reclaiming cannot make room: the
    /// scheduler should preempt a request and retry.
    @discardableResult
    public func step(_ lengths: [(slot: Int, length: Int)]) throws -> StepReport {
        let start = monotonicNanos()
        core.stepWaiting.add(1, ordering: .relaxed)
        defer { core.stepWaiting.subtract(1, ordering: .relaxed) }
        let report = try core.state.withLock { s -> StepReport in
            try s.checkOpen()
            var seen = Set<Int>()
            for (slot, length) in lengths {
                try s.checkActive(slot)
                guard length >= 0, length <= spec.maxContext else {
                    throw KVCacheError.lengthOutOfRange(slot: slot, length: length, maxContext: spec.maxContext)
                }
                guard seen.insert(slot).inserted else { throw KVCacheError.duplicateSlotInStep(slot) }
            }
            var newLength = [Int: Int](minimumCapacity: lengths.count)
            for (slot, length) in lengths { newLength[slot] = length }
            let needed = lengths.reduce(0) { sum, e in
                sum + s.slots[e.slot].missingPages(upTo: spec.pagesPerTensor(tokens: e.length))
            }
            if needed > 0 {
                let available = s.freeablePages(spec: spec, overridingLengths: newLength)
                if needed > available { throw KVCacheError.outOfPages(needed: needed, available: available) }
            }
            let oldLengths = lengths.map { s.slots[$0.slot].length }
            for (slot, length) in lengths { s.slots[slot].length = length }
            var mapped = 0
            let reclaimedBefore = s.stats.unmaps
            do {
                for (slot, length) in lengths {
                    let target = spec.pagesPerTensor(tokens: length)
                    for t in 0..<spec.tensorCount {
                        while s.slots[slot].pages[t].count < target {
                            try core.mapNextPage(&s, slot: slot, tensor: t, background: false)
                            mapped += 1
                        }
                    }
                }
            } catch {
                // A driver failure mid-way: lengths go back, pages mapped so far stay (as look-ahead).
                for (i, e) in lengths.enumerated() { s.slots[e.slot].length = oldLengths[i] }
                s.stats.memory.criticalMaps += mapped
                throw error
            }
            s.scheduleLookAhead(spec: spec, policy: policy)
            let nanos = monotonicNanos() - start
            s.stats.steps += 1
            s.stats.memory.criticalMaps += mapped
            s.stats.memory.criticalNanos += nanos
            return StepReport(criticalNanos: nanos, pagesMapped: mapped,
                              pagesReclaimed: s.stats.unmaps - reclaimedBefore)
        }
        if policy.background { core.signal.post() }
        return report
    }

    // MARK: Capacity

    /// Whether `slot` can grow to `length` tokens now (counting pages the manager could reclaim).
    public func canGrow(_ slot: Int, to length: Int) throws -> Bool {
        try core.state.withLock { s in
            try s.checkOpen()
            try s.checkActive(slot)
            guard length <= spec.maxContext else { return false }
            let needed = s.slots[slot].missingPages(upTo: spec.pagesPerTensor(tokens: length))
            return needed <= s.freeablePages(spec: spec, overridingLengths: [slot: length])
        }
    }

    /// Whether a new request of `tokens` tokens fits now: a free slot, and enough free or reclaimable pages for whole
    /// pages in every tensor (the scheduler's `canAllocate` before `allocateSlot`).
    public func canAdmit(tokens: Int) -> Bool {
        core.state.withLock { s in
            guard !s.shutDown, tokens <= spec.maxContext, s.slots.contains(where: { !$0.active }) else { return false }
            return spec.pagesPerTensor(tokens: tokens) * spec.tensorCount
                <= s.freeablePages(spec: spec, overridingLengths: [:])
        }
    }

    /// Tokens that still fit across all requests if pages were perfectly shared out: free + reclaimable pages,
    /// converted at the per-tensor token density. An upper bound: each request also rounds up to whole pages.
    public var freeTokenCapacity: Int {
        core.state.withLock { s in
            let pagesPerTensor = s.freeablePages(spec: spec, overridingLengths: [:]) / spec.tensorCount
            return pagesPerTensor * spec.pageSize / spec.tokenBytesPerTensor
        }
    }

    /// Whether a slot is free for a new request.
    public var hasFreeSlot: Bool { core.state.withLock { s in s.slots.contains { !$0.active } } }

    public func length(of slot: Int) throws -> Int {
        try core.state.withLock { s in
            try s.checkActive(slot)
            return s.slots[slot].length
        }
    }

    /// Unmaps up to `pages` pages (idle slots first, then over-eager tails of active slots) back into the pool.
    @discardableResult
    public func reclaim(pages: Int) throws -> Int {
        try core.state.withLock { s in
            try s.checkOpen()
            var n = 0
            while n < pages, let page = try core.reclaimOne(&s, idleOnly: false) {
                s.pool.append(page)
                n += 1
            }
            return n
        }
    }

    // MARK: What kernels need

    /// Base address and element strides of one layer's K or V tensor.
    public func view(layer: Int, _ kind: KVKind) -> KVTensorView {
        precondition(layer >= 0 && layer < spec.layers, "layer \(layer) out of range")
        let base = spec.layout == .perLayer ? tensorBases[kind.rawValue * spec.layers + layer] : tensorBases[kind.rawValue]
        return .layer(layer, of: spec.layers, layout: spec.layout, tensorBase: base, kvHeads: spec.kvHeads,
                      headDim: spec.headDim, slotStride: spec.slotBytes / spec.dtype.byteCount, dtype: spec.dtype)
    }

    // MARK: Observability

    public var stats: KVCacheStats {
        core.state.withLock { s in
            var st = s.stats
            st.poolPages = totalPages
            st.freePages = s.pool.count
            st.mappedPages = totalPages - s.pool.count
            st.memory.reservedBytes = spec.reservedBytes
            st.memory.capacityBytes = totalPages * spec.pageSize
            st.memory.activeSlots = s.slots.filter(\.active).count
            st.memory.usedBytes = s.slots.filter(\.active).reduce(0) { $0 + $1.length * spec.tokenBytes }
            st.memory.mappedBytes = st.mappedPages * spec.pageSize
            return st
        }
    }

    /// Lets the background mapper finish what it was asked (tests and benchmarks use it to observe a quiet state).
    public func waitForBackgroundMapper() {
        while core.state.withLock({ !$0.lookAhead.isEmpty && !$0.shutDown }) { sched_yield_() }
    }

    /// Every rule the manager lives by; empty when all hold. Tests call it after every operation.
    public func checkInvariants() -> [String] {
        core.state.withLock { s in
            var problems: [String] = []
            var seen = Set<PhysicalPage>(s.pool)
            if seen.count != s.pool.count { problems.append("a page appears twice in the free pool") }
            var mappedCount = 0
            for (i, slot) in s.slots.enumerated() {
                let need = slot.active ? spec.pagesPerTensor(tokens: slot.length) : 0
                if slot.length > spec.maxContext { problems.append("slot \(i): length \(slot.length) > max context") }
                if !slot.active && slot.length != 0 { problems.append("slot \(i): idle with length \(slot.length)") }
                let counts = slot.pages.map(\.count)
                if slot.minPages != (counts.min() ?? 0) || slot.maxPages != (counts.max() ?? 0)
                    || slot.totalPages != counts.reduce(0, +)
                {
                    problems.append("slot \(i): cached page counts are stale")
                }
                for (t, pages) in slot.pages.enumerated() {
                    if pages.count < need {
                        problems.append("slot \(i) tensor \(t): \(pages.count) pages mapped, length needs \(need)")
                    }
                    if pages.count > spec.maxPagesPerTensor {
                        problems.append("slot \(i) tensor \(t): \(pages.count) pages exceed the slot's region")
                    }
                    for p in pages where !seen.insert(p).inserted {
                        problems.append("\(p) mapped twice (slot \(i) tensor \(t))")
                    }
                    mappedCount += pages.count
                }
            }
            if s.pool.count + mappedCount != totalPages {
                problems.append("pool \(s.pool.count) + mapped \(mappedCount) != total \(totalPages)")
            }
            return problems
        }
    }

    /// Stops the mapper, unmaps every page, releases the pool and the reservations. Idempotent.
    public func shutdown() throws {
        let first = core.state.withLock { s -> Bool in
            defer { s.shutDown = true }
            return !s.shutDown
        }
        guard first else { return }
        core.signal.post()
        mapper?.join()
        try core.state.withLock { s in
            for i in s.slots.indices {
                if let f = s.slots[i].fence { try f.wait() }
                for t in 0..<spec.tensorCount {
                    while let count = Optional(s.slots[i].pages[t].count), count > 0 {
                        try backend.unmap(address: core.address(slot: i, tensor: t, page: count - 1),
                                          pageSize: spec.pageSize)
                        s.pool.append(s.slots[i].removeLast(tensor: t))
                    }
                }
            }
            try backend.releasePages(s.pool, pageSize: spec.pageSize)
            s.pool.removeAll()
            for b in tensorBases { try backend.releaseReservation(address: b, bytes: spec.tensorBytes) }
        }
    }
}

/// How far ahead the background mapper backs each active request.
public struct MapAheadPolicy: Sendable, Hashable {
    /// Run a background mapper thread at all. Off: every page is mapped on the critical path.
    public var background: Bool
    /// Map so each active slot is backed up to `length + lookAheadTokens` (decode adds one token per step, so this is
    /// the number of steps of warning before a page boundary; the reference uses ~10).
    public var lookAheadTokens: Int

    public init(background: Bool = true, lookAheadTokens: Int = 16) {
        self.background = background
        self.lookAheadTokens = lookAheadTokens
    }
}

/// What one `step` cost.
public struct StepReport: Sendable, Hashable {
    /// Wall time inside `step`: lock wait + synchronous mapping + reclaiming.
    public var criticalNanos: UInt64
    public var pagesMapped: Int
    public var pagesReclaimed: Int
}

/// What a KV store holds and what it cost, in terms every store has (vAttention's manager, the paged baseline): the
/// engine, the server's metrics and the benches read it.
public struct KVMemoryReport: Sendable, Hashable {
    public var reservedBytes = 0
    public var mappedBytes = 0
    public var usedBytes = 0
    public var wasteBytes: Int { mappedBytes - usedBytes }
    public var criticalMaps = 0
    public var backgroundMaps = 0
    /// Physical memory the store may map at most (its pool); `mappedBytes` never exceeds it.
    public var capacityBytes = 0
    /// Slots held by requests (a finished or cancelled request gives its slot back).
    public var activeSlots = 0
    /// Time the engine waited inside `step` (mapping on the critical path, lock waits).
    public var criticalNanos: UInt64 = 0

    public init(reservedBytes: Int = 0, mappedBytes: Int = 0, usedBytes: Int = 0, criticalMaps: Int = 0,
                backgroundMaps: Int = 0, capacityBytes: Int = 0, activeSlots: Int = 0, criticalNanos: UInt64 = 0) {
        self.reservedBytes = reservedBytes
        self.mappedBytes = mappedBytes
        self.usedBytes = usedBytes
        self.criticalMaps = criticalMaps
        self.backgroundMaps = backgroundMaps
        self.capacityBytes = capacityBytes
        self.activeSlots = activeSlots
        self.criticalNanos = criticalNanos
    }
}

/// The manager's own counters beside its `memory` report.
public struct KVCacheStats: Sendable, Hashable {
    /// Bytes reserved, mapped and used, maps on and off the critical path, active slots, time on the critical path.
    public var memory = KVMemoryReport()
    public var poolPages = 0
    public var freePages = 0
    public var mappedPages = 0
    public var steps = 0
    public var unmaps = 0
    public var backgroundNanos: UInt64 = 0
    /// Failures of the background mapper (it stops mapping ahead; `step` still maps what is needed).
    public var backgroundErrors = 0
    public var lastBackgroundError: String?
}

@inline(__always) func sched_yield_() {
    #if canImport(Glibc)
    _ = sched_yield()
    #endif
}

#if canImport(Glibc)
import Glibc
#endif
