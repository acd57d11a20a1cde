import Synchronization

/// One slot's bookkeeping: `pages[t][i]` is mapped at tensor t's base + slot·slotBytes + i·pageSize.
struct SlotState {
    var active = false
    var length = 0
    var pages: [[PhysicalPage]]
    /// Device work that may still read this slot's pages (set on free); waited before any of them is unmapped.
    var fence: (any MemoryFence)?

    init(tensors: Int) { pages = Array(repeating: [], count: tensors) }

    var minPages: Int { pages.lazy.map(\.count).min() ?? 0 }

    func missingPages(upTo target: Int) -> Int { pages.reduce(0) { $0 + max(0, target - $1.count) } }
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
                let need = spec.pagesPerTensor(tokens: overridingLengths[i] ?? slot.length)
                for p in slot.pages { n += max(0, p.count - need) }
            } else {
                for p in slot.pages { n += p.count }
            }
        }
        return n
    }

    mutating func scheduleLookAhead(spec: KVCacheSpec, policy: MapAheadPolicy) {
        lookAhead.removeAll(keepingCapacity: true)
        guard policy.background else { return }
        for (i, slot) in slots.enumerated() where slot.active {
            let target = spec.pagesPerTensor(tokens: min(spec.maxContext, slot.length + policy.lookAheadTokens))
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
    let state: Mutex<ManagerState>
    let signal = WakeSignal()
    /// Steps waiting for the lock: the mapper yields to them between pages (a Mutex is not fair).
    let stepWaiting = Atomic<Int>(0)

    init(spec: KVCacheSpec, backend: any MemoryBackend, bases: [UInt], pool: [PhysicalPage], policy: MapAheadPolicy) {
        self.spec = spec
        self.backend = backend
        self.bases = bases
        self.policy = policy
        state = Mutex(ManagerState(slots: Array(repeating: SlotState(tensors: spec.tensorCount), count: spec.maxSlots),
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
        s.slots[slot].pages[tensor].append(page)
    }

    /// Unmaps one page: the last page of the idle slot holding the most, else (unless `idleOnly`) the last page of the
    /// active slot whose mapping runs furthest beyond its length. Returns nil when nothing is reclaimable.
    func reclaimOne(_ s: inout ManagerState, idleOnly: Bool) throws -> PhysicalPage? {
        var victim: (slot: Int, tensor: Int, excess: Int)?
        for (i, slot) in s.slots.enumerated() where !slot.active {
            for (t, p) in slot.pages.enumerated() where p.count > (victim?.excess ?? 0) { victim = (i, t, p.count) }
        }
        if victim == nil && !idleOnly {
            for (i, slot) in s.slots.enumerated() where slot.active {
                let need = spec.pagesPerTensor(tokens: slot.length)
                for (t, p) in slot.pages.enumerated() where p.count - need > (victim?.excess ?? 0) {
                    victim = (i, t, p.count - need)
                }
            }
        }
        guard let v = victim else { return nil }
        if let fence = s.slots[v.slot].fence {
            try fence.wait()
            s.slots[v.slot].fence = nil
        }
        let index = s.slots[v.slot].pages[v.tensor].count - 1
        try backend.unmap(address: address(slot: v.slot, tensor: v.tensor, page: index), pageSize: spec.pageSize)
        s.stats.unmaps += 1
        return s.slots[v.slot].pages[v.tensor].removeLast()
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
            s.stats.backgroundMaps += 1
            s.stats.backgroundNanos += monotonicNanos() - start
            return true
        }
        return false
    }
}
