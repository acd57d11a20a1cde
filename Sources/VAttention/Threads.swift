import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A wake-up counter a worker thread sleeps on: `post` bumps it, `wait(after:)` sleeps until it moves.
final class WakeSignal: @unchecked Sendable {
    // pthread objects must not move: heap-allocated once, owned here.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var generation: UInt64 = 0  // guarded by mutex

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    func post() {
        pthread_mutex_lock(mutex)
        generation &+= 1
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Sleeps until the generation differs from `seen`; returns the new generation.
    func wait(after seen: UInt64) -> UInt64 {
        pthread_mutex_lock(mutex)
        while generation == seen { pthread_cond_wait(cond, mutex) }
        let g = generation
        pthread_mutex_unlock(mutex)
        return g
    }
}

/// A joinable OS thread running `body` (no Foundation: the GPU binary stays small).
final class OSThread: @unchecked Sendable {
    private final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }
    private var handle = pthread_t()

    init(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let r = pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(r == 0, "pthread_create failed: \(r)")
    }

    func join() { pthread_join(handle, nil) }
}

/// State behind a pthread mutex. Used instead of `Synchronization.Mutex` because on Linux that one sleeps on raw futex
/// syscalls, which ThreadSanitizer cannot see: every access under it is then reported as a race, and real races would
/// drown in the noise. pthread locks are intercepted, so `--sanitize=thread` checks our locking for real.
public final class Locked<State>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var state: State  // guarded by mutex

    public init(_ state: State) {
        self.state = state
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }
}
