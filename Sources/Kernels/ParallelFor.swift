import Support
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Online CPUs; the default worker count for the kernels.
public let defaultThreadCount: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

/// Runs `body(i)` for every `i` in `0..<count` on up to `threads` threads
/// (the caller is one of them) and returns when all are done. Items are handed
/// out dynamically (atomic counter), so uneven items such as long and short
/// sequences balance themselves. The helper threads live in one persistent pool
/// and spin on an atomic between calls for a while before sleeping: a forward
/// pass makes ~120 calls a token, microseconds apart, and waking a sleeping
/// thread each time cost more than the work. A call made while the pool is busy
/// (another thread's job, or a nested call) runs on the calling thread alone.
/// `body` runs concurrently, hence `@Sendable`.
public func parallelFor(_ count: Int, threads: Int = defaultThreadCount, _ body: @Sendable (Int) -> Void) {
    let workers = min(max(threads, 1), count)
    if workers <= 1 {
        for i in 0..<count { body(i) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let job = ParallelJob(count: count, body: body)
        if !WorkerPool.shared.run(job) { job.work() }
    }
}

/// Helper threads that wait for a job (spinning, then asleep), drain it with the caller, and report back.
///
/// `state` is the generation of the current job, a closed bit and the number of helpers inside it. The caller
/// writes `job`, publishes a new generation, works, then closes the job and waits only for the helpers that joined
/// before it closed; a helper joins by incrementing the count while the job is open, and leaves by decrementing it.
/// A helper that comes late (descheduled on a busy machine) finds the job closed and never touches it, so the
/// caller never waits for a thread that has not started.
private final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool(helpers: defaultThreadCount - 1)
    /// State checks a helper makes before it sleeps: about a third of a millisecond, longer than the gaps between
    /// the calls of a forward pass, shorter than an idle engine's.
    private static let spinLimit = 200_000
    private static let closed: UInt64 = 1 << 31
    private static let countMask: UInt64 = closed - 1

    private let helpers: Int
    /// Held for the length of a job: one job at a time.
    private let busy = Atomic<Bool>(false)
    /// generation << 32 | closed | helpers inside the job.
    private let state = Atomic<UInt64>(closed)
    /// Helpers asleep or about to sleep on `wake`: the caller broadcasts only when there are some. Sequentially
    /// consistent with `state`, so either the caller sees a sleeper or the sleeper sees the new generation.
    private let sleepers = Atomic<Int>(0)
    /// The current job's generation; only the caller holding `busy` touches it.
    private var generation: UInt32 = 0
    /// The current job, unretained (the caller keeps it alive); written only while no helper is inside a job.
    private var job: Unmanaged<ParallelJob>?
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init(helpers: Int) {
        self.helpers = helpers
        pthread_mutex_init(lock, nil)
        pthread_cond_init(wake, nil)
        for _ in 0..<helpers {
            OSThread.detached { [unowned self] in self.loop() }
        }
    }

    /// Runs `job` with the helpers that join in time; false if the pool is busy (the caller then runs it alone).
    func run(_ job: ParallelJob) -> Bool {
        guard helpers > 0, busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return false
        }
        self.job = .passUnretained(job)
        generation &+= 1
        state.store(UInt64(generation) << 32, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(lock)
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(lock)
        }
        job.work()
        var current = state.bitwiseOr(Self.closed, ordering: .acquiringAndReleasing).newValue
        var spins = 0
        while current & Self.countMask != 0 {
            spins += 1
            if spins > 1000 { sched_yield() }  // a helper inside the job lost its core: let it run
            current = state.load(ordering: .acquiring)
        }
        self.job = nil
        busy.store(false, ordering: .releasing)
        return true
    }

    private func loop() {
        var seen: UInt32 = 0
        while true {
            var spins = 0
            var current = state.load(ordering: .acquiring)
            while UInt32(truncatingIfNeeded: current >> 32) == seen {
                spins += 1
                if spins >= Self.spinLimit {
                    pthread_mutex_lock(lock)
                    sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                    while UInt32(truncatingIfNeeded: state.load(ordering: .sequentiallyConsistent) >> 32) == seen {
                        pthread_cond_wait(wake, lock)
                    }
                    sleepers.wrappingSubtract(1, ordering: .relaxed)
                    pthread_mutex_unlock(lock)
                    spins = 0
                }
                current = state.load(ordering: .acquiring)
            }
            seen = UInt32(truncatingIfNeeded: current >> 32)
            // Join while the job is open; the count changes under us only by other helpers joining or leaving.
            while current & Self.closed == 0 {
                let (joined, found) = state.compareExchange(expected: current, desired: current + 1, ordering: .acquiring)
                if joined {
                    job!._withUnsafeGuaranteedRef { $0.work() }
                    state.wrappingSubtract(1, ordering: .releasing)
                    break
                }
                current = found
            }
        }
    }
}

private final class ParallelJob: @unchecked Sendable {
    let next = Atomic<Int>(0)
    let count: Int
    let body: @Sendable (Int) -> Void

    init(count: Int, body: @escaping @Sendable (Int) -> Void) {
        self.count = count
        self.body = body
    }

    func work() {
        while true {
            let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
            if i >= count { return }
            body(i)
        }
    }
}
