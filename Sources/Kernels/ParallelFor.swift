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
/// (a model step calls this hundreds of times: creating threads per call would
/// cost more than a small matrix product). A call made while the pool is busy
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

/// Helper threads that sleep until a job is posted, drain it with the caller, and report back.
private final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool(helpers: defaultThreadCount - 1)

    private let helpers: Int
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// Held for the length of a job: one job at a time.
    private let busy = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var job: ParallelJob?  // guarded by lock
    private var generation: UInt64 = 0  // guarded by lock
    private var running = 0  // helpers still inside the current job; guarded by lock

    init(helpers: Int) {
        self.helpers = helpers
        pthread_mutex_init(lock, nil)
        pthread_mutex_init(busy, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(done, nil)
        for _ in 0..<helpers {
            var tid = pthread_t()
            let arg = Unmanaged.passUnretained(self).toOpaque()
            pthread_create(&tid, nil, { raw in
                Unmanaged<WorkerPool>.fromOpaque(raw!).takeUnretainedValue().loop()
                return nil
            }, arg)
            pthread_detach(tid)
        }
    }

    /// Runs `job` with every helper; false if the pool is busy (the caller then runs it alone).
    func run(_ job: ParallelJob) -> Bool {
        guard helpers > 0, pthread_mutex_trylock(busy) == 0 else { return false }
        defer { pthread_mutex_unlock(busy) }
        pthread_mutex_lock(lock)
        self.job = job
        running = helpers
        generation &+= 1
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(lock)
        job.work()
        pthread_mutex_lock(lock)
        while running > 0 { pthread_cond_wait(done, lock) }
        self.job = nil
        pthread_mutex_unlock(lock)
        return true
    }

    private func loop() {
        var seen: UInt64 = 0
        while true {
            pthread_mutex_lock(lock)
            while generation == seen { pthread_cond_wait(wake, lock) }
            seen = generation
            var current = job
            pthread_mutex_unlock(lock)
            current?.work()
            // Drop the job (and the caller's non-escaping closure it holds) before reporting done: the caller's
            // `withoutActuallyEscaping` checks that nothing kept it.
            current = nil
            pthread_mutex_lock(lock)
            running -= 1
            if running == 0 { pthread_cond_signal(done) }
            pthread_mutex_unlock(lock)
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
