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

/// Continuous batching over one model and one KV store: scheduler + KV store + model runner, one loop.
///
/// Every `step()`: pick the batch (running decodes, then prompt chunks under the token budget, admitting waiting
/// requests while memory allows), back it in the KV store (preempting the youngest request by recompute when memory
/// runs out — it goes back to the queue and loses nothing), run the model, sample, and report new text.
public final class LLMEngine {
    public let model: any ModelRunner
    /// nil for models without one (dummy weights): prompts are token ids, events carry no text, no EOS.
    public let tokenizer: Tokenizer?
    public let kv: any KVStore
    public let configuration: EngineConfiguration
    public private(set) var stats = EngineStats()

    final class Request {
        let id: Int
        let prompt: [TokenID]
        let parameters: SamplingParameters
        var output: [TokenID] = []
        var sampler: Sampler
        var detokenizer: StreamingDetokenizer?
        /// The stop strings, and the text decoded but not yet emitted (it may be the start of one).
        var stops: StopScanner
        var emittedText = ""
        var slot: Int?
        /// Tokens of `prompt + output` whose K/V are in the cache.
        var cached = 0
        var finished: FinishReason?
        let arrival: Int

        init(id: Int, prompt: [TokenID], parameters: SamplingParameters, tokenizer: Tokenizer?, arrival: Int) {
            self.id = id
            self.prompt = prompt
            self.parameters = parameters
            sampler = Sampler(seed: parameters.seed ?? UInt64(id) &* 0x9E37_79B9_7F4A_7C15)
            detokenizer = tokenizer.map { StreamingDetokenizer(tokenizer: $0) }
            stops = StopScanner(parameters.stop)
            self.arrival = arrival
        }

        /// Everything that must be in the cache before the next token: prompt and all generated tokens.
        var sequence: [TokenID] { prompt + output }
        var length: Int { prompt.count + output.count }
    }

    private var waiting: [Request] = []
    /// Admitted one step ahead: a slot, and their first chunk being mapped in the background (`KVStore.prepare`)
    /// while the current step computes; they start running next step.
    private var admitted: [Request] = []
    private var running: [Request] = []
    private var requests: [Int: Request] = [:]
    private var nextID = 0

    public init(model: any ModelRunner, tokenizer: Tokenizer?, kv: any KVStore,
                configuration: EngineConfiguration = EngineConfiguration()) {
        self.model = model
        self.tokenizer = tokenizer
        self.kv = kv
        // A budget or a batch of 0 would never schedule anything: every step would return at once, for ever.
        var configuration = configuration
        configuration.tokenBudget = max(1, configuration.tokenBudget)
        configuration.maxRunning = max(1, configuration.maxRunning)
        self.configuration = configuration
    }

    /// The longest sequence (prompt + output) one request can reach: the KV store's context, or less when its pool
    /// cannot hold that much even for a request alone.
    public var maxContext: Int { min(kv.maxContext, kv.capacityTokens) }

    /// The tokenizer, for callers that work with text (a dummy-weight model has none).
    public func requireTokenizer() throws -> Tokenizer {
        guard let tokenizer else { throw EngineError.noTokenizer }
        return tokenizer
    }

    /// Queues a request; returns its id. Prompts longer than the context are refused, and so are prompts the KV
    /// pool could not hold even with nothing else running (they would wait for ever).
    public func add(prompt: [TokenID], parameters: SamplingParameters) throws -> Int {
        guard !prompt.isEmpty else { throw EngineError.emptyPrompt }
        guard prompt.count < kv.maxContext else {
            throw EngineError.promptTooLong(tokens: prompt.count, context: kv.maxContext)
        }
        guard prompt.count < kv.capacityTokens else {
            throw EngineError.promptTooLargeForMemory(tokens: prompt.count, capacity: kv.capacityTokens)
        }
        let id = nextID
        nextID += 1
        let r = Request(id: id, prompt: prompt, parameters: parameters, tokenizer: tokenizer, arrival: id)
        waiting.append(r)
        requests[id] = r
        return id
    }

    /// Stops a request at once and frees its slot (e.g. its client went away).
    public func cancel(_ id: Int) throws {
        guard let r = requests[id] else { return }
        try model.bindCallingThread()  // freeing a slot may reach the device (a fence)
        try complete(r, .cancelled)
    }

    public var hasWork: Bool { !waiting.isEmpty || !running.isEmpty || !admitted.isEmpty }
    public var waitingCount: Int { waiting.count }
    public var runningCount: Int { running.count }
    /// Requests given a slot for the next step (admitted ahead), not running yet.
    public var admittedCount: Int { admitted.count }
    /// Requests whose bookkeeping the engine keeps: queued, running, or finished and not yet `remove`d. A server
    /// removes every request it is done with, so when idle this is 0 (a soak test checks it).
    public var trackedRequests: Int { requests.count }

    /// The generated tokens of a request (finished or not).
    public func output(of id: Int) -> [TokenID]? { requests[id]?.output }

    /// One iteration. Returns the events of every request that produced text or finished.
    ///
    /// Always makes progress or returns at once: a request that has the KV pool to itself and still cannot grow ends
    /// with `.length` (its context is as full as memory allows), and a waiting request that cannot be admitted even
    /// with nothing else running ends the same way, with no tokens — so a caller looping `while hasWork` never spins.
    public func step() throws -> [EngineEvent] {
        // Whichever thread steps the engine drives the device: the KV store maps pages below, the model runs.
        try model.bindCallingThread()
        var chunks: [(Request, SequenceChunk)] = []
        var admit = true
        while true {
            chunks = schedule(admitting: admit)
            guard !chunks.isEmpty else {
                // Nothing runs and the head of the queue cannot be admitted with the whole pool free: it never will.
                if admit, running.isEmpty, admitted.isEmpty, let head = waiting.first {
                    return [try endForMemory(head)]
                }
                return []
            }
            do {
                try kv.step(chunks.map { ($0.1.slot, $0.1.start + $0.1.tokens.count) })
                break
            } catch is KVOutOfMemory {
                if try releaseAdmitted() { continue }  // first give back what was only reserved ahead
                if try preemptYoungest() {
                    admit = false  // re-admitting what was just preempted would only fail again
                    continue
                }
                // One request runs, alone, with every other slot idle, and its next token does not fit: the pool is
                // its context. It ends as a full context does (preempting it would only recompute it into the same
                // wall, for ever).
                guard let lone = running.first else { throw EngineError.requestTooLargeForMemory }
                return [try endForMemory(lone)]
            }
        }
        let draws = chunks.filter(\.1.wantsLogits).map { r, _ in
            TokenDraw(parameters: r.parameters, uniform: r.sampler.nextDraw())
        }
        try admitAhead()
        let tokens = try model.run(chunks.map(\.1), kv: kv, sampling: draws)
        stats.steps += 1
        stats.tokensComputed += chunks.reduce(0) { $0 + $1.1.tokens.count }
        var events: [EngineEvent] = []
        var next = tokens.makeIterator()
        for (r, chunk) in chunks {
            r.cached = chunk.start + chunk.tokens.count
            guard chunk.wantsLogits, let token = next.next() else { continue }
            r.output.append(token)
            stats.tokensGenerated += 1
            events.append(try emit(r, token))
        }
        return events
    }

    /// Runs until every queued request has finished; returns their outputs by id.
    public func runToCompletion(onEvent: (EngineEvent) -> Void = { _ in }) throws {
        while hasWork {
            for e in try step() { onEvent(e) }
        }
    }

    // MARK: Scheduling

    private func schedule(admitting: Bool) -> [(Request, SequenceChunk)] {
        var budget = configuration.tokenBudget
        var batch: [(Request, SequenceChunk)] = []
        // Decodes first: one token each for requests whose whole sequence but the last token is cached.
        for r in running where r.cached == r.length - 1 && budget > 0 {
            batch.append((r, SequenceChunk(slot: r.slot!, start: r.cached, tokens: [r.sequence[r.cached]], wantsLogits: true)))
            budget -= 1
        }
        // Then prompt (or recompute) chunks of running requests, then those admitted ahead, then admissions.
        for r in running where r.cached < r.length - 1 && budget > 0 {
            batch.append((r, chunk(r, budget: &budget)))
        }
        while budget > 0, !admitted.isEmpty {
            let r = admitted.removeFirst()
            running.append(r)
            batch.append((r, chunk(r, budget: &budget)))
        }
        while admitting, budget > 0, let r = admitNext() {
            running.append(r)
            batch.append((r, chunk(r, budget: &budget)))
        }
        return batch
    }

    /// The first waiting request with a KV slot of its own, if one may run (a free place under `maxRunning`, and
    /// memory for its prompt); it leaves the queue.
    private func admitNext() -> Request? {
        guard let r = waiting.first, running.count + admitted.count < configuration.maxRunning,
              kv.canAdmit(tokens: min(r.length, kv.maxContext)),
              let slot = try? kv.allocateSlot(expectedLength: r.length + r.parameters.maxTokens)
        else { return nil }
        waiting.removeFirst()
        r.slot = slot
        r.cached = 0
        return r
    }

    private func chunk(_ r: Request, budget: inout Int) -> SequenceChunk {
        let remaining = r.length - r.cached
        let n = min(remaining, budget)
        budget -= n
        let tokens = Array(r.sequence[r.cached..<(r.cached + n)])
        return SequenceChunk(slot: r.slot!, start: r.cached, tokens: tokens, wantsLogits: r.cached + n == r.length)
    }

    /// Admits waiting requests for the next step now, so their first chunk's memory is mapped in the background
    /// while this step computes (only where the store maps on demand; elsewhere admission stays in `schedule`).
    private func admitAhead() throws {
        guard kv.mapsOnDemand, admitted.isEmpty else { return }
        // Next step's decodes come first (about one token per running request).
        var budget = configuration.tokenBudget - running.count
        while budget > 0, let r = admitNext() {
            admitted.append(r)
            let first = min(r.length, budget)
            try kv.prepare(r.slot!, tokens: first)
            budget -= first
        }
    }

    /// Gives the slots of requests admitted ahead back (they wait again, first in line). False if there were none.
    private func releaseAdmitted() throws -> Bool {
        guard !admitted.isEmpty else { return false }
        for r in admitted {
            try kv.free(r.slot!)
            r.slot = nil
        }
        waiting.insert(contentsOf: admitted, at: 0)
        admitted.removeAll()
        return true
    }

    /// Out of KV memory: the most recently admitted running request gives its slot back and will be recomputed.
    /// False when one request runs alone: nothing can make room for it.
    private func preemptYoungest() throws -> Bool {
        guard running.count > 1, let victim = running.max(by: { $0.arrival < $1.arrival })
        else { return false }
        try kv.free(victim.slot!)
        victim.slot = nil
        victim.cached = 0
        running.removeAll { $0 === victim }
        waiting.insert(victim, at: 0)
        stats.preemptions += 1
        return true
    }

    // MARK: Output

    private func emit(_ r: Request, _ token: TokenID) throws -> EngineEvent {
        var finish: FinishReason?
        let isEOS = tokenizer.map { token == $0.eosID || $0.type(of: token) == .control } ?? false
        var piece = ""
        if isEOS && !r.parameters.ignoreEOS {
            finish = .stop
        } else if r.detokenizer != nil {
            piece = r.detokenizer!.push(token)
        }
        // Stop strings: cut at the first match; otherwise hold back a tail that could still become one. Only the new
        // piece is scanned (`StopScanner` keeps its state), so a token costs the same whatever the text so far.
        var (text, stopped) = r.stops.push(piece)
        if stopped {
            finish = .stop
        } else {
            if finish == nil && (r.output.count >= r.parameters.maxTokens || r.length >= kv.maxContext) {
                finish = .length
            }
            // Finishing: nothing can become a stop string any more, so all held text goes out.
            if finish != nil {
                text += r.stops.flush()
                if r.detokenizer != nil { text += r.detokenizer!.flush() }
            }
        }
        r.emittedText += text
        if let f = finish { try complete(r, f) }
        return EngineEvent(request: r.id, tokens: [token], text: text, finished: finish)
    }

    /// Ends a request that the KV pool cannot hold any longer (or at all) with `.length`, flushing the text it holds.
    private func endForMemory(_ r: Request) throws -> EngineEvent {
        var text = r.stops.flush()
        if r.detokenizer != nil { text += r.detokenizer!.flush() }
        r.emittedText += text
        try complete(r, .length)
        stats.endedByMemory += 1
        return EngineEvent(request: r.id, tokens: [], text: text, finished: .length)
    }

    private func complete(_ r: Request, _ reason: FinishReason) throws {
        r.finished = reason
        if let slot = r.slot { try kv.free(slot) }
        r.slot = nil
        running.removeAll { $0 === r }
        waiting.removeAll { $0 === r }
        admitted.removeAll { $0 === r }
        stats.finished += 1
    }

    /// The full text a request has produced so far.
    public func text(of id: Int) -> String? { requests[id]?.emittedText }
    public func finishReason(of id: Int) -> FinishReason? { requests[id]?.finished }
    /// Forgets a finished request's bookkeeping.
    public func remove(_ id: Int) { if requests[id]?.finished != nil { requests[id] = nil } }
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
}
