import Support
import Synchronization

/// One slot's bookkeeping: `pages[t][i]` is mapped at tensor t's base + slot·slotBytes + i·pageSize.
struct SlotState {
    var active = false
    var length = 0
    /// Tokens the background mapper should back this slot to, beyond its length (`KVCacheManager.mapAhead`).
    var mapAheadTo = 0
    private(set) var pages: [[PhysicalPage]]
    /// min over tensors of `pages[t].count`, kept current so a step's common case (nothing to map) costs O(1) per
    /// slot instead of O(tensors): 64 tensors × 256 slots is otherwise ~0.5 ms per step.
    private(set) var minPages = 0
    /// max over tensors of `pages[t].count`, and the sum: reclaiming picks victims in O(slots) with these.
    private(set) var maxPages = 0
    private(set) var totalPages = 0
    /// Device work that may still read this slot's pages (set on free); waited before any of them is unmapped.
    var fence: (any MemoryFence)?

    init(tensors: Int) { pages = Array(repeating: [], count: tensors) }

    mutating func append(_ page: PhysicalPage, tensor t: Int) {
        let wasMin = pages[t].count == minPages
        pages[t].append(page)
        totalPages += 1
        maxPages = max(maxPages, pages[t].count)
        if wasMin { minPages = pages.lazy.map(\.count).min() ?? 0 }
    }

    mutating func removeLast(tensor t: Int) -> PhysicalPage {
        let wasMax = pages[t].count == maxPages
        let page = pages[t].removeLast()
        totalPages -= 1
        minPages = min(minPages, pages[t].count)
        if wasMax { maxPages = pages.lazy.map(\.count).max() ?? 0 }
        return page
    }

    /// The tensor holding the most pages (the one to take a page from).
    var fullestTensor: Int { pages.indices.max { pages[$0].count < pages[$1].count } ?? 0 }

    /// Pages beyond `target` per tensor.
    func excessPages(over target: Int) -> Int {
        if maxPages <= target { return 0 }
        return pages.reduce(0) { $0 + max(0, $1.count - target) }
    }

    func missingPages(upTo target: Int) -> Int {
        if minPages >= target { return 0 }
        return pages.reduce(0) { $0 + max(0, target - $1.count) }
    }
}

struct ManagerState {
    var slots: [SlotState]
    var pool: [PhysicalPage]
    var stats = KVCacheStats()
    /// Background work: slots to back up to `pages` per tensor. Replaced by every step.
    var lookAhead: [(slot: Int, pages: Int)] = []
    var shutDown = false

    func checkOpen() throws { if shutDown { throw KVCacheError.shutDown } }

    func checkActive(_ slot: Int) throws {
        guard slot >= 0, slot < slots.count else { throw KVCacheError.unknownSlot(slot) }
        guard slots[slot].active else { throw KVCacheError.slotNotActive(slot) }
    }

    /// Pages obtainable without touching what active requests hold: free pool + idle slots' pages + pages beyond the
    /// length of active slots (with some lengths overridden, for a step being planned).
    func freeablePages(spec: KVCacheSpec, overridingLengths: [Int: Int]) -> Int {
        var n = pool.count
        for (i, slot) in slots.enumerated() {
            if slot.active {
                n += slot.excessPages(over: spec.pagesPerTensor(tokens: overridingLengths[i] ?? slot.length))
            } else {
                n += slot.totalPages
            }
        }
        return n
    }

    mutating func scheduleLookAhead(spec: KVCacheSpec, policy: MapAheadPolicy) {
        lookAhead.removeAll(keepingCapacity: true)
        guard policy.background else { return }
        for (i, slot) in slots.enumerated() where slot.active {
            let tokens = max(slot.length + policy.lookAheadTokens, slot.mapAheadTo)
            let target = spec.pagesPerTensor(tokens: min(spec.maxContext, tokens))
            if slot.missingPages(upTo: target) > 0 { lookAhead.append((i, target)) }
        }
    }
}

/// The shared part of a manager: state, backend, and the mapper thread's loop. The mapper thread holds a reference to
/// this, not to the manager, so the manager's deinit can stop it.
final class Core: Sendable {
    let spec: KVCacheSpec
    let backend: any MemoryBackend
    let bases: [UInt]
    let policy: MapAheadPolicy
    let state: Locked<ManagerState>
    let signal = WakeSignal()
    /// Steps waiting for the lock: the mapper yields to them between pages (a Mutex is not fair).
    let stepWaiting = Atomic<Int>(0)

    init(spec: KVCacheSpec, backend: any MemoryBackend, bases: [UInt], pool: [PhysicalPage], policy: MapAheadPolicy) {
        self.spec = spec
        self.backend = backend
        self.bases = bases
        self.policy = policy
        state = Locked(ManagerState(slots: Array(repeating: SlotState(tensors: spec.tensorCount), count: spec.maxSlots),
                                   pool: pool))
    }

    @inline(__always) func address(slot: Int, tensor: Int, page: Int) -> UInt {
        bases[tensor] + UInt(slot * spec.slotBytes + page * spec.pageSize)
    }

    /// Maps one more page at the end of (slot, tensor), taking it from the pool or reclaiming one.
    func mapNextPage(_ s: inout ManagerState, slot: Int, tensor: Int, background: Bool) throws {
        let page: PhysicalPage
        if let p = s.pool.popLast() {
            page = p
        } else if let p = try reclaimOne(&s, idleOnly: background) {
            page = p
        } else {
            throw KVCacheError.outOfPages(needed: 1, available: 0)
        }
        let index = s.slots[slot].pages[tensor].count
        do {
            try backend.map(page, at: address(slot: slot, tensor: tensor, page: index), pageSize: spec.pageSize)
        } catch {
            s.pool.append(page)
            throw error
        }
        s.slots[slot].append(page, tensor: tensor)
    }

    /// Unmaps one page: the last page of the idle slot holding the most, else (unless `idleOnly`) the last page of the
    /// active slot whose mapping runs furthest beyond its length. Returns nil when nothing is reclaimable.
    func reclaimOne(_ s: inout ManagerState, idleOnly: Bool) throws -> PhysicalPage? {
        var victim: (slot: Int, amount: Int)?
        for (i, slot) in s.slots.enumerated() where !slot.active && slot.totalPages > (victim?.amount ?? 0) {
            victim = (i, slot.totalPages)
        }
        if victim == nil && !idleOnly {
            for (i, slot) in s.slots.enumerated() where slot.active {
                let excess = slot.maxPages - spec.pagesPerTensor(tokens: slot.length)
                if excess > (victim?.amount ?? 0) { victim = (i, excess) }
            }
        }
        guard let chosen = victim else { return nil }
        let v = (slot: chosen.slot, tensor: s.slots[chosen.slot].fullestTensor)
        if let fence = s.slots[v.slot].fence {
            try fence.wait()
            s.slots[v.slot].fence = nil
        }
        let index = s.slots[v.slot].pages[v.tensor].count - 1
        try backend.unmap(address: address(slot: v.slot, tensor: v.tensor, page: index), pageSize: spec.pageSize)
        s.stats.unmaps += 1
        return s.slots[v.slot].removeLast(tensor: v.tensor)
    }

    /// The background mapper: sleeps until a step posts work, then maps look-ahead pages one at a time, yielding the
    /// lock to any waiting step between pages.
    func runMapper() {
        do {
            try backend.bindCurrentThread()
        } catch {
            state.withLock { s in
                s.stats.backgroundErrors += 1
                s.stats.lastBackgroundError = "\(error)"
            }
            return
        }
        var seen: UInt64 = 0
        while true {
            seen = signal.wait(after: seen)
            while true {
                while stepWaiting.load(ordering: .relaxed) > 0 { sched_yield_() }
                let progress = state.withLock { s -> Bool? in
                    if s.shutDown { return nil }
                    return mapOneAhead(&s)
                }
                guard let progress else { return }
                if !progress { break }
            }
        }
    }

    /// One unit of background work. Returns false when there is nothing (more) to do.
    private func mapOneAhead(_ s: inout ManagerState) -> Bool {
        while let (slot, target) = s.lookAhead.last {
            guard s.slots[slot].active,
                  let t = s.slots[slot].pages.firstIndex(where: { $0.count < target })
            else {
                s.lookAhead.removeLast()
                continue
            }
            let start = monotonicNanos()
            do {
                try mapNextPage(&s, slot: slot, tensor: t, background: true)
            } catch KVCacheError.outOfPages {
                s.lookAhead.removeAll()  // nothing to spare: look-ahead waits for memory to come back
                return false
            } catch {
                s.stats.backgroundErrors += 1
                s.stats.lastBackgroundError = "\(error)"
                s.lookAhead.removeAll()
                return false
            }
            s.stats.memory.backgroundMaps += 1
            s.stats.backgroundNanos += monotonicNanos() - start
            return true
        }
        return false
    }
}
