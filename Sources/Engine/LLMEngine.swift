import CUDADriver
import Model

/// Why a request stopped.
public enum FinishReason: String, Sendable {
    /// End-of-sequence token or a stop string.
    case stop
    /// `maxTokens` reached, or the context is full.
    case length
    /// Cancelled by the caller (e.g. a client that disconnected).
    case cancelled
}

/// What one engine step produced for one request.
public struct EngineEvent: Sendable {
    public var request: Int
    /// Tokens generated this step (usually one).
    public var tokens: [TokenID]
    /// New text (complete UTF-8 characters only; stop strings held back until they cannot match).
    public var text: String
    public var finished: FinishReason?
}

/// Engine settings.
public struct EngineConfiguration: Sendable {
    /// Tokens per iteration (Sarathi-style chunked prefill: decodes first, then prompt chunks fill the rest).
    public var tokenBudget: Int = 256
    /// Requests running at once at most (also bounded by the KV store's slots).
    public var maxRunning: Int = 64
    public init(tokenBudget: Int = 256, maxRunning: Int = 64) {
        self.tokenBudget = tokenBudget
        self.maxRunning = maxRunning
    }
}

/// Continuous batching over one model and one KV store: a `Scheduler` plans each step over the store's slots, the
/// model runs the plan, an `OutputProcessor` turns the sampled tokens into text and finish reasons.
///
/// Every `step()`: plan the batch (running decodes, then prompt chunks under the token budget, admitting waiting
/// requests while memory allows; out of memory, the youngest request is preempted by recompute — it goes back to the
/// queue and loses nothing), run the model, sample, and report new text.
public final class LLMEngine {
    public let model: any ModelRunner
    /// nil for models without one (dummy weights): prompts are token ids, events carry no text, no EOS.
    public var tokenizer: Tokenizer? { outputs.tokenizer }
    public let kv: any KVStore
    public let configuration: EngineConfiguration
    public let scheduler: Scheduler
    public let outputs: OutputProcessor
    public private(set) var stats = EngineStats()

    /// What the engine keeps of a request beyond the scheduler: how it samples, what it has said.
    struct Request {
        let parameters: SamplingParameters
        var sampler: Sampler
        var output: OutputProcessor.State
        /// Set when the scheduler has let go of it (the tokens it produced).
        var finalTokens: [TokenID]?
    }
    private var requests: [Int: Request] = [:]
    private var nextID = 0

    public init(model: any ModelRunner, tokenizer: Tokenizer?, kv: any KVStore,
                configuration: EngineConfiguration = EngineConfiguration()) {
        precondition(model.kvLocation == kv.location,
                     "a model running on the \(model.kvLocation) cannot use a KV store in \(kv.location) memory")
        self.model = model
        self.kv = kv
        outputs = OutputProcessor(tokenizer: tokenizer)
        scheduler = Scheduler(kv: kv, tokenBudget: configuration.tokenBudget, maxRunning: configuration.maxRunning)
        self.configuration = EngineConfiguration(tokenBudget: scheduler.tokenBudget, maxRunning: scheduler.maxRunning)
    }

    /// The longest sequence (prompt + output) one request can reach: the KV store's context, or less when its pool
    /// cannot hold that much even for a request alone.
    public var maxContext: Int { scheduler.maxContext }

    /// The tokenizer, for callers that work with text (a dummy-weight model has none).
    public func requireTokenizer() throws -> Tokenizer {
        guard let tokenizer else { throw EngineError.noTokenizer }
        return tokenizer
    }

    /// Queues a request; returns its id. Prompts longer than the context are refused, and so are prompts the KV
    /// pool could not hold even with nothing else running (they would wait for ever).
    public func add(prompt: [TokenID], parameters: SamplingParameters) throws -> Int {
        let id = nextID
        try scheduler.add(id: id, prompt: prompt, maxTokens: parameters.maxTokens)
        nextID += 1
        requests[id] = Request(parameters: parameters,
                               sampler: Sampler(seed: parameters.seed ?? UInt64(id) &* 0x9E37_79B9_7F4A_7C15),
                               output: outputs.start(parameters))
        return id
    }

    /// Stops a request at once and frees its slot (e.g. its client went away).
    public func cancel(_ id: Int) throws {
        guard requests[id] != nil, requests[id]!.finished == nil else { return }
        try model.bindCallingThread()  // freeing a slot may reach the device (a fence)
        try finish(id, .cancelled)
    }

    public var hasWork: Bool { scheduler.hasWork }
    public var waitingCount: Int { scheduler.waitingCount }
    public var runningCount: Int { scheduler.runningCount }
    /// Requests given a slot for the next step (admitted ahead), not running yet.
    public var admittedCount: Int { scheduler.admittedCount }
    /// Requests whose bookkeeping the engine keeps: queued, running, or finished and not yet `remove`d. A server
    /// removes every request it is done with, so when idle this is 0 (a soak test checks it).
    public var trackedRequests: Int { requests.count }

    /// The generated tokens of a request (finished or not).
    public func output(of id: Int) -> [TokenID]? { requests[id]?.finalTokens ?? scheduler.output(of: id) }

    /// One iteration. Returns the events of every request that produced text or finished.
    ///
    /// Always makes progress or returns at once: a request that has the KV pool to itself and still cannot grow ends
    /// with `.length` (its context is as full as memory allows), and a waiting request that cannot be admitted even
    /// with nothing else running ends the same way, with no tokens — so a caller looping `while hasWork` never spins.
    public func step() throws -> [EngineEvent] {
        // Whichever thread steps the engine drives the device: the KV store maps pages below, the model runs.
        try model.bindCallingThread()
        let plan = try scheduler.schedule()
        stats.preemptions += plan.preempted.count
        var events: [EngineEvent] = []
        for id in plan.endedForMemory {
            let text = outputs.end(&requests[id]!.output, .length)
            try finish(id, .length)
            stats.endedByMemory += 1
            events.append(EngineEvent(request: id, tokens: [], text: text, finished: .length))
        }
        guard !plan.chunks.isEmpty else { return events }
        let sampledChunks = plan.sampledChunks
        let draws = sampledChunks.map { i in
            let id = plan.requests[i]
            return TokenDraw(parameters: requests[id]!.parameters, uniform: requests[id]!.sampler.nextDraw())
        }
        let tokens = try model.run(plan.chunks, kv: kv, sampling: draws)
        stats.steps += 1
        stats.tokensComputed += plan.chunks.reduce(0) { $0 + $1.tokens.count }
        stats.tokensGenerated += tokens.count
        scheduler.update(plan, sampled: tokens)
        for (i, token) in zip(sampledChunks, tokens) {
            let id = plan.requests[i]
            let (text, finished) = outputs.push(token, into: &requests[id]!.output,
                                                generated: scheduler.output(of: id)!.count,
                                                length: scheduler.length(of: id)!, maxContext: kv.maxContext)
            if let finished { try finish(id, finished) }
            events.append(EngineEvent(request: id, tokens: [token], text: text, finished: finished))
        }
        return events
    }

    /// Runs until every queued request has finished.
    public func runToCompletion(onEvent: (EngineEvent) -> Void = { _ in }) throws {
        while hasWork {
            for e in try step() { onEvent(e) }
        }
    }

    private func finish(_ id: Int, _ reason: FinishReason) throws {
        requests[id]!.output.finished = reason
        requests[id]!.finalTokens = try scheduler.finish(id)
        stats.finished += 1
    }

    /// The full text a request has produced so far.
    public func text(of id: Int) -> String? { requests[id]?.output.text }
    public func finishReason(of id: Int) -> FinishReason? { requests[id]?.finished }
    /// Forgets a finished request's bookkeeping.
    public func remove(_ id: Int) { if requests[id]?.finished != nil { requests[id] = nil } }
}

extension LLMEngine.Request {
    var finished: FinishReason? { output.finished }
}

extension LLMEngine {
    /// Whether `error`, thrown by `step`, leaves the engine unable to step again (the device's context is unusable:
    /// every later step would fail the same way). Other failures end the requests in flight and the engine goes on.
    public static func leavesEngineUnusable(_ error: any Error) -> Bool {
        (error as? CUDAError)?.leavesContextUnusable ?? false
    }
}

public enum EngineError: Error, Equatable, CustomStringConvertible {
    case emptyPrompt
    case promptTooLong(tokens: Int, context: Int)
    case promptTooLargeForMemory(tokens: Int, capacity: Int)
    case requestTooLargeForMemory
    case noTokenizer

    public var description: String {
        switch self {
        case .emptyPrompt: return "the prompt is empty"
        case .promptTooLong(let t, let c): return "the prompt has \(t) tokens; the context holds \(c)"
        case .promptTooLargeForMemory(let t, let c):
            return "the prompt has \(t) tokens; the KV memory holds at most \(c) tokens for one request "
                + "(raise the KV budget, or lower the context)"
        case .requestTooLargeForMemory: return "a single request needs more KV memory than the whole budget"
        case .noTokenizer: return "this model has no tokenizer (dummy weights): it takes token ids, not text"
        }
    }
}

public struct EngineStats: Sendable {
    public var steps = 0
    public var tokensComputed = 0
    public var tokensGenerated = 0
    public var preemptions = 0
    public var finished = 0
    /// Requests ended with `.length` because the KV pool could not hold them any longer.
    public var endedByMemory = 0

    public init() {}
}
