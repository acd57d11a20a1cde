#if canImport(Glibc)
import Glibc
#endif

/// A wake-up counter a worker thread sleeps on: `post` bumps it, `wait(after:)` sleeps until it moves.
public final class WakeSignal: @unchecked Sendable {
    // pthread objects must not move: heap-allocated once, owned here.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var generation: UInt64 = 0  // guarded by mutex

    public init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    public func post() {
        pthread_mutex_lock(mutex)
        generation &+= 1
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Sleeps until the generation differs from `seen`; returns the new generation.
    public func wait(after seen: UInt64) -> UInt64 {
        pthread_mutex_lock(mutex)
        while generation == seen { pthread_cond_wait(cond, mutex) }
        let g = generation
        pthread_mutex_unlock(mutex)
        return g
    }
}

/// An OS thread running `body` (no Foundation: the GPU binary stays small). For long CPU-bound loops that must not
/// sit on Swift's cooperative pool: the KV mapper, the engine's thread, the CPU kernels' helpers.
public final class OSThread: @unchecked Sendable {
    private final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }
    private var handle = pthread_t()

    /// Starts a joinable thread.
    public init(_ body: @escaping @Sendable () -> Void) {
        handle = Self.start(body)
    }

    public func join() { pthread_join(handle, nil) }

    /// Starts a thread nobody joins (it runs for the life of the process, or ends on its own).
    public static func detached(_ body: @escaping () -> Void) {
        pthread_detach(start(body))
    }

    private static func start(_ body: @escaping () -> Void) -> pthread_t {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var handle = pthread_t()
        let r = pthread_create(&handle, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(r == 0, "pthread_create failed: \(r)")
        return handle
    }
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
