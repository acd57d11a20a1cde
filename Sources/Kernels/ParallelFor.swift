#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Online CPUs; the default worker count for the kernels.
public let defaultThreadCount: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

/// Runs `body(i)` for every `i` in `0..<count` on up to `threads` threads
/// (the caller is one of them) and returns when all are done. Items are handed
/// out dynamically (atomic counter), so uneven items such as long and short
/// sequences balance themselves. Threads are created per call: a few tens of
/// microseconds, small next to attention work and no idle pool to manage.
/// `body` runs concurrently, hence `@Sendable`.
public func parallelFor(_ count: Int, threads: Int = defaultThreadCount, _ body: @Sendable (Int) -> Void) {
    let workers = min(max(threads, 1), count)
    if workers <= 1 {
        for i in 0..<count { body(i) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let job = ParallelJob(count: count, body: body)
        var tids: [pthread_t] = []
        tids.reserveCapacity(workers - 1)
        for _ in 1..<workers {
            var tid = pthread_t()
            let arg = Unmanaged.passRetained(job).toOpaque()
            let rc = pthread_create(&tid, nil, { raw in
                let job = Unmanaged<ParallelJob>.fromOpaque(raw!).takeRetainedValue()
                job.work()
                return nil
            }, arg)
            if rc == 0 {
                tids.append(tid)
            } else {
                Unmanaged<ParallelJob>.fromOpaque(arg).release()  // fewer threads; caller still drains all items
            }
        }
        job.work()
        for tid in tids { pthread_join(tid, nil) }
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
