import Dispatch
import Engine
import Support
import Logging
import Metrics
import Model
import ServiceLifecycle
import VAttention
#if canImport(Glibc)
import Glibc
#endif

/// The queue already holds as many waiting requests as allowed.
public struct QueueFull: Error, Sendable {
    public let waiting: Int
}

/// The engine is shutting down and takes no new requests.
public struct ShuttingDown: Error, Sendable {}

/// The engine hit a fault it cannot recover from (the device is lost, the context unusable, or steps keep failing):
/// it takes no more requests, and the server exits non-zero once it has drained, so an orchestrator restarts it.
public struct EngineDead: Error, Sendable, CustomStringConvertible {
    public let reason: String
    public var description: String { "the engine stopped after a fault it cannot recover from: \(reason)" }
}

/// Why an accepted request ended without finishing; its event stream ends by throwing this.
public struct GenerationFailure: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// An engine step failed while the request was in flight (HTTP 500).
        case engineFault
        /// The server shut down (drain limit reached, or the engine died) before the request finished (HTTP 503).
        case shuttingDown
        /// The engine refused the request when it reached it (HTTP 400).
        case refused
    }
    public let kind: Kind
    public let message: String
    public var description: String { message }
}

/// What the HTTP side sees of the engine at one moment.
public struct EngineSnapshot: Sendable {
    /// Requests accepted but not yet running (in the inbox or the engine's waiting queue).
    public var waiting = 0
    public var running = 0
    public var engine = EngineStats()
    public var kv = KVMemoryReport()
    /// Requests the engine still keeps bookkeeping for (0 when idle, or something leaks).
    public var trackedRequests = 0
    /// Requests whose event stream to an HTTP handler is open (0 when idle).
    public var openStreams = 0
}

/// One accepted request: its events, in order, end with one whose `finished` is set; or the stream throws a
/// `GenerationFailure` (the engine failed, refused it, or shut down first); or it just ends (cancelled).
public struct Generation: Sendable {
    public let ticket: UInt64
    public let events: AsyncThrowingStream<EngineEvent, any Error>
}

/// Owns the `LLMEngine` (which is not thread-safe) on a dedicated thread: it steps while there is work, otherwise
/// sleeps until a request or a cancellation arrives. Every request's events go to its own `AsyncStream`.
///
/// A `Service` for swift-service-lifecycle: `run()` returns after a graceful shutdown once every accepted request
/// has finished (put it before the HTTP server in the `ServiceGroup`, so the server drains its streams first).
public final class EngineService: Service, @unchecked Sendable {
    // Everything below is immutable or guarded by `state`; `engine` is touched only by the engine thread.
    private let engine: LLMEngine
    /// nil for a model without one (dummy weights): the server then takes token-id prompts only.
    public let tokenizer: Tokenizer?
    /// The largest token id a prompt may hold, plus one.
    public var vocabularySize: Int { tokenizer?.vocabularySize ?? engine.model.hyperparameters.vocabSize }
    public let maxContext: Int
    public let maxWaiting: Int
    /// Requests that can run at once: the engine's limit or the KV store's slots, whichever is smaller.
    public let slotCapacity: Int
    private let metrics: ServerMetrics
    private let logger: Logger

    private typealias Continuation = AsyncThrowingStream<EngineEvent, any Error>.Continuation

    private enum Command {
        case add(ticket: UInt64, prompt: [TokenID], parameters: SamplingParameters, continuation: Continuation)
        case cancel(ticket: UInt64)
    }

    private struct State {
        var inbox: [Command] = []
        var nextTicket: UInt64 = 1
        var snapshot = EngineSnapshot()
        /// Requests holding a slot at the last publish (running, or admitted for the next step).
        var slotsBusy = 0
        var closing = false
        /// Cancelled (not a graceful shutdown): end every request now.
        var aborting = false
        /// When a graceful shutdown ends whatever is still in flight (`beginShutdown(drainLimit:)`).
        var drainDeadline: ContinuousClock.Instant?
        /// Set once when a fault makes the engine unusable; every later request is refused with it.
        var dead: String?
        var started = false
        var stopped = false
        var onStop: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Locked(State())  // a pthread lock: ThreadSanitizer sees it (Synchronization.Mutex it does not)
    private let wake = DispatchSemaphore(value: 0)

    /// `maxWaiting`: requests that may wait for a slot; one more is refused with `QueueFull` (HTTP 429).
    /// Steps in a row that may fail (each ending the requests in flight) before the engine is declared dead.
    public static let failuresBeforeDead = 3

    public init(engine: LLMEngine, maxWaiting: Int = 64, metrics: ServerMetrics,
                logger: Logger = Logger(label: "vattn.engine")) {
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.maxContext = engine.kv.maxContext
        self.maxWaiting = maxWaiting
        self.slotCapacity = min(engine.configuration.maxRunning, engine.kv.slotCount)
        self.metrics = metrics
        self.logger = logger
        let m = engine.kv.memory
        state.withLock { $0.snapshot.kv = m }
    }

    public var snapshot: EngineSnapshot { state.withLock { $0.snapshot } }
    /// Why the engine died, or nil while it serves.
    public var deathReason: String? { state.withLock { $0.dead } }
    /// A shutdown began: no new requests are taken.
    public var isShuttingDown: Bool { state.withLock { $0.closing } }

    /// Queues a request. Throws `QueueFull` when `maxWaiting` requests already wait for a slot — accepted requests
    /// beyond the slots; a request in the inbox while a slot is free is not waiting for one — `ShuttingDown` after
    /// shutdown began. Dropping or cancelling the consumer of `events` cancels the request.
    public func submit(prompt: [TokenID], parameters: SamplingParameters) throws -> Generation {
        let (stream, continuation) = AsyncThrowingStream<EngineEvent, any Error>.makeStream()
        let ticket: UInt64 = try state.withLock { s in
            if let reason = s.dead { throw EngineDead(reason: reason) }
            if s.closing || s.stopped { throw ShuttingDown() }
            let waitingForSlot = s.snapshot.waiting + s.slotsBusy - slotCapacity
            if waitingForSlot >= maxWaiting { throw QueueFull(waiting: waitingForSlot) }
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
        // A plain thread: the engine's steps are long CPU-bound calls that must not sit on the cooperative pool.
        OSThread.detached { [self] in loop() }
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
        // A dead engine ends the service with an error: the group drains the HTTP side, then the process exits
        // non-zero (the server is configured to shut the group down gracefully when this service fails).
        if let reason = deathReason { throw EngineDead(reason: reason) }
    }

    /// No new requests; the thread exits when every accepted one has finished — or, with a `drainLimit`, once that
    /// much time has passed: then the requests still in flight end with a `GenerationFailure(.shuttingDown)`.
    /// Returns the requests in flight at the call. A later call never extends an earlier limit.
    @discardableResult
    public func beginShutdown(drainLimit: Duration? = nil) -> Int {
        let inFlight = state.withLock { s in
            s.closing = true
            if let drainLimit {
                let deadline = ContinuousClock.now + drainLimit
                s.drainDeadline = min(s.drainDeadline ?? deadline, deadline)
            }
            return s.snapshot.waiting + s.snapshot.running
        }
        wake.signal()
        return inFlight
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
        var streams: [UInt64: Continuation] = [:]
        var ticketOf: [Int: UInt64] = [:]
        var engineID: [UInt64: Int] = [:]
        var lastPreemptions = 0
        var failuresInARow = 0

        /// Ends every request in the engine with `failure` — and, with `inbox`, those submitted but not yet taken in
        /// (when no request may run any more: the engine died or the drain limit passed). Only requests already
        /// accepted when it runs are ended: the inbox is taken first, so one submitted meanwhile is never caught.
        func failAll(_ failure: GenerationFailure, inbox: Bool) -> Int {
            let queued: [Continuation] = !inbox ? [] : state.withLock { s in
                defer { s.inbox.removeAll { if case .add = $0 { return true } else { return false } } }
                return s.inbox.compactMap { c -> Continuation? in if case .add(_, _, _, let k) = c { k } else { nil } }
            }
            for (_, id) in engineID {
                try? engine.cancel(id)
                engine.remove(id)
            }
            let ended = streams.count + queued.count
            for (_, c) in streams { c.finish(throwing: failure) }
            for c in queued { c.finish(throwing: failure) }
            streams = [:]
            engineID = [:]
            ticketOf = [:]
            if ended > 0 { metrics.failed.increment(by: ended) }
            return ended
        }

        while true {
            let (commands, closing, aborting, deadline) = state.withLock { s in
                defer { s.inbox = [] }
                return (s.inbox, s.closing, s.aborting, s.drainDeadline)
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
                        continuation.finish(throwing: GenerationFailure(kind: .refused, message: "\(error)"))
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
            if closing, let deadline, ContinuousClock.now >= deadline, !streams.isEmpty {
                let n = failAll(GenerationFailure(kind: .shuttingDown,
                                                  message: "the server shut down before this request finished"),
                                inbox: true)
                logger.warning("drain limit reached: ended \(n) requests still in flight")
            }
            if engine.hasWork {
                let start = ContinuousClock.now
                let events: [EngineEvent]
                do {
                    let ran = engine.stats.steps
                    events = try engine.step()
                    // Only a step that ran the model clears the count: one with nothing to schedule proves nothing.
                    if engine.stats.steps > ran { failuresInARow = 0 }
                } catch {
                    failuresInARow += 1
                    metrics.engineFailures.increment()
                    let fatal = LLMEngine.leavesEngineUnusable(error) || failuresInARow >= Self.failuresBeforeDead
                    let message = "engine step failed: \(error)"
                    // Dead before the requests are failed: a request submitted meanwhile is refused, never stranded.
                    if fatal { state.withLock { $0.dead = message; $0.closing = true } }
                    let n = failAll(GenerationFailure(kind: .engineFault, message: message), inbox: fatal)
                    if fatal {
                        // Said once: every later request is refused at once with this reason.
                        logger.critical(
                            "\(message); ended \(n) requests; the engine is dead: refusing new requests, exiting once the server has drained")
                        break
                    }
                    logger.error("\(message); ended the \(n) requests in flight")
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
                if idle {
                    if closing { _ = wake.wait(timeout: .now() + .milliseconds(100)) } else { wake.wait() }
                }
            }
        }
        let reason = state.withLock { $0.dead }
        for (_, c) in streams {
            if let reason { c.finish(throwing: GenerationFailure(kind: .shuttingDown, message: reason)) } else { c.finish() }
        }
        streams = [:]
        publish(openStreams: 0)
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
        let busy = running + engine.admittedCount
        let snap = state.withLock { s in
            s.slotsBusy = busy
            let pending = s.inbox.reduce(0) { n, c in if case .add = c { return n + 1 } else { return n } }
            s.snapshot = EngineSnapshot(waiting: waiting + pending, running: running, engine: stats, kv: m,
                                        trackedRequests: engine.trackedRequests, openStreams: openStreams)
            return s.snapshot
        }
        metrics.queueDepth.record(snap.waiting)
        metrics.running.record(snap.running)
        metrics.kvMapped.record(snap.kv.mappedBytes)
        metrics.kvUsed.record(snap.kv.usedBytes)
        metrics.kvCapacity.record(snap.kv.capacityBytes)
        metrics.kvActiveSlots.record(snap.kv.activeSlots)
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
