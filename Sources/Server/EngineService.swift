import Dispatch
import Engine
import Logging
import Metrics
import Model
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The queue already holds as many waiting requests as allowed.
public struct QueueFull: Error, Sendable {
    public let waiting: Int
}

/// The engine is shutting down and takes no new requests.
public struct ShuttingDown: Error, Sendable {}

/// What the HTTP side sees of the engine at one moment.
public struct EngineSnapshot: Sendable {
    /// Requests accepted but not yet running (in the inbox or the engine's waiting queue).
    public var waiting = 0
    public var running = 0
    public var steps = 0
    public var preemptions = 0
    public var tokensGenerated = 0
    public var kvMappedBytes = 0
    public var kvUsedBytes = 0
    public var kvReservedBytes = 0
    public var kvCapacityBytes = 0
    public var kvActiveSlots = 0
    /// Requests the engine still keeps bookkeeping for (0 when idle, or something leaks).
    public var trackedRequests = 0
    /// Requests whose event stream to an HTTP handler is open (0 when idle).
    public var openStreams = 0
}

/// One accepted request: its events, in order, end with one whose `finished` is set (or the stream just ends if the
/// engine failed or shut down).
public struct Generation: Sendable {
    public let ticket: UInt64
    public let events: AsyncStream<EngineEvent>
}

/// Owns the `LLMEngine` (which is not thread-safe) on a dedicated thread: it steps while there is work, otherwise
/// sleeps until a request or a cancellation arrives. Every request's events go to its own `AsyncStream`.
///
/// A `Service` for swift-service-lifecycle: `run()` returns after a graceful shutdown once every accepted request
/// has finished (put it before the HTTP server in the `ServiceGroup`, so the server drains its streams first).
public final class EngineService: Service, @unchecked Sendable {
    // Everything below is immutable or guarded by `state`; `engine` is touched only by the engine thread.
    private let engine: LLMEngine
    public let tokenizer: Tokenizer
    public let maxContext: Int
    public let maxWaiting: Int
    private let metrics: ServerMetrics
    private let logger: Logger

    private enum Command {
        case add(ticket: UInt64, prompt: [TokenID], parameters: SamplingParameters,
                 continuation: AsyncStream<EngineEvent>.Continuation)
        case cancel(ticket: UInt64)
    }

    private struct State {
        var inbox: [Command] = []
        var nextTicket: UInt64 = 1
        var snapshot = EngineSnapshot()
        var closing = false
        /// Cancelled (not a graceful shutdown): end every request now.
        var aborting = false
        var started = false
        var stopped = false
        var onStop: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    /// `maxWaiting`: requests that may wait for a slot; one more is refused with `QueueFull` (HTTP 429).
    public init(engine: LLMEngine, maxWaiting: Int = 64, metrics: ServerMetrics,
                logger: Logger = Logger(label: "vattn.engine")) {
        self.engine = engine
        guard let tokenizer = engine.tokenizer else { preconditionFailure("the server needs a model with a tokenizer") }
        self.tokenizer = tokenizer
        self.maxContext = engine.kv.maxContext
        self.maxWaiting = maxWaiting
        self.metrics = metrics
        self.logger = logger
        let m = engine.kv.memory
        state.withLock {
            $0.snapshot.kvMappedBytes = m.mappedBytes
            $0.snapshot.kvUsedBytes = m.usedBytes
            $0.snapshot.kvReservedBytes = m.reservedBytes
            $0.snapshot.kvCapacityBytes = m.capacityBytes
        }
    }

    public var snapshot: EngineSnapshot { state.withLock { $0.snapshot } }

    /// Queues a request. Throws `QueueFull` when `maxWaiting` requests already wait, `ShuttingDown` after shutdown
    /// began. Dropping or cancelling the consumer of `events` cancels the request.
    public func submit(prompt: [TokenID], parameters: SamplingParameters) throws -> Generation {
        let (stream, continuation) = AsyncStream<EngineEvent>.makeStream()
        let ticket: UInt64 = try state.withLock { s in
            if s.closing || s.stopped { throw ShuttingDown() }
            if s.snapshot.waiting >= maxWaiting { throw QueueFull(waiting: s.snapshot.waiting) }
            let t = s.nextTicket
            s.nextTicket += 1
            s.snapshot.waiting += 1
            s.inbox.append(.add(ticket: t, prompt: prompt, parameters: parameters, continuation: continuation))
            return t
        }
        metrics.queueDepth.record(snapshot.waiting)
        continuation.onTermination = { [weak self] reason in
            if case .cancelled = reason { self?.cancel(ticket) }
        }
        wake.signal()
        return Generation(ticket: ticket, events: stream)
    }

    /// Stops a request at once (its slot is freed on the engine thread's next turn); a no-op once it finished.
    public func cancel(_ ticket: UInt64) {
        state.withLock { $0.inbox.append(.cancel(ticket: ticket)) }
        wake.signal()
    }

    // MARK: Service

    public func run() async throws {
        let alreadyStarted = state.withLock { s in
            defer { s.started = true }
            return s.started
        }
        precondition(!alreadyStarted, "EngineService.run() called twice")
        startThread { [self] in loop() }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await waitUntilStopped()
            } onGracefulShutdown: { [self] in
                beginShutdown()
            }
        } onCancel: { [self] in
            state.withLock { $0.closing = true; $0.aborting = true }
            wake.signal()
        }
    }

    /// No new requests; the thread exits when every accepted one has finished.
    public func beginShutdown() {
        state.withLock { $0.closing = true }
        wake.signal()
    }

    private func waitUntilStopped() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLock { s -> Bool in
                if s.stopped { return true }
                s.onStop.append(c)
                return false
            }
            if done { c.resume() }
        }
    }

    // MARK: The engine thread

    private func loop() {
        var streams: [UInt64: AsyncStream<EngineEvent>.Continuation] = [:]
        var ticketOf: [Int: UInt64] = [:]
        var engineID: [UInt64: Int] = [:]
        var lastPreemptions = 0

        func finishAll() {
            for (_, c) in streams { c.finish() }
            streams = [:]
        }

        while true {
            let (commands, closing, aborting) = state.withLock { s in
                defer { s.inbox = [] }
                return (s.inbox, s.closing, s.aborting)
            }
            for command in commands {
                switch command {
                case let .add(ticket, prompt, parameters, continuation):
                    do {
                        let id = try engine.add(prompt: prompt, parameters: parameters)
                        streams[ticket] = continuation
                        ticketOf[id] = ticket
                        engineID[ticket] = id
                    } catch {
                        logger.warning("request refused by the engine: \(error)")
                        continuation.finish()
                    }
                case let .cancel(ticket):
                    guard let id = engineID.removeValue(forKey: ticket) else { continue }
                    do { try engine.cancel(id) } catch { logger.error("cancel failed: \(error)") }
                    engine.remove(id)
                    ticketOf[id] = nil
                    streams.removeValue(forKey: ticket)?.finish()
                    metrics.cancelled.increment()
                }
            }

            if aborting {
                for (ticket, id) in engineID {
                    try? engine.cancel(id)
                    engine.remove(id)
                    streams.removeValue(forKey: ticket)?.finish()
                }
                engineID = [:]
                ticketOf = [:]
            }
            if engine.hasWork {
                let start = ContinuousClock.now
                let events: [EngineEvent]
                do {
                    events = try engine.step()
                } catch {
                    // Unrecoverable for the requests in flight (e.g. one request larger than all KV memory).
                    logger.error("engine step failed: \(error); ending all requests")
                    for (ticket, id) in engineID {
                        try? engine.cancel(id)
                        engine.remove(id)
                        streams.removeValue(forKey: ticket)?.finish()
                    }
                    engineID = [:]
                    ticketOf = [:]
                    continue
                }
                metrics.stepLatency.recordNanoseconds(ContinuousClock.now - start)
                for e in events {
                    guard let ticket = ticketOf[e.request] else { continue }
                    metrics.generatedTokens.increment(by: e.tokens.count)
                    streams[ticket]?.yield(e)
                    if e.finished != nil {
                        streams.removeValue(forKey: ticket)?.finish()
                        ticketOf[e.request] = nil
                        engineID[ticket] = nil
                        engine.remove(e.request)
                    }
                }
                let stats = engine.stats
                if stats.preemptions > lastPreemptions {
                    metrics.preemptions.increment(by: stats.preemptions - lastPreemptions)
                    lastPreemptions = stats.preemptions
                }
            }
            publish(openStreams: streams.count)

            if !engine.hasWork {
                let idle = state.withLock { $0.inbox.isEmpty }
                if closing && idle && streams.isEmpty {
                    break
                }
                if idle { wake.wait() }
            }
        }
        finishAll()
        let waiters = state.withLock { s in
            s.stopped = true
            defer { s.onStop = [] }
            return s.onStop
        }
        for w in waiters { w.resume() }
    }

    private func publish(openStreams: Int) {
        let m = engine.kv.memory
        let stats = engine.stats
        let waiting = engine.waitingCount
        let running = engine.runningCount
        let snap = state.withLock { s in
            let pending = s.inbox.reduce(0) { n, c in if case .add = c { return n + 1 } else { return n } }
            s.snapshot = EngineSnapshot(waiting: waiting + pending, running: running, steps: stats.steps,
                                        preemptions: stats.preemptions, tokensGenerated: stats.tokensGenerated,
                                        kvMappedBytes: m.mappedBytes, kvUsedBytes: m.usedBytes,
                                        kvReservedBytes: m.reservedBytes, kvCapacityBytes: m.capacityBytes,
                                        kvActiveSlots: m.activeSlots, trackedRequests: engine.trackedRequests,
                                        openStreams: openStreams)
            return s.snapshot
        }
        metrics.queueDepth.record(snap.waiting)
        metrics.running.record(snap.running)
        metrics.kvMapped.record(snap.kvMappedBytes)
        metrics.kvUsed.record(snap.kvUsedBytes)
        metrics.kvCapacity.record(snap.kvCapacityBytes)
        metrics.kvActiveSlots.record(snap.kvActiveSlots)
        metrics.trackedRequests.record(snap.trackedRequests)
        metrics.openStreams.record(snap.openStreams)
    }
}

extension Metrics.Timer {
    func recordNanoseconds(_ d: Duration) {
        let (s, atto) = d.components
        recordNanoseconds(s * 1_000_000_000 + atto / 1_000_000_000)
    }
}

private final class ThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// A plain pthread: the engine's steps are long CPU-bound calls that must not sit on Swift's cooperative pool.
private func startThread(_ body: @escaping () -> Void) {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        let b = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
        b.body()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    pthread_detach(tid)
}
