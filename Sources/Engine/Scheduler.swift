import Model

/// What one engine step computes, as data: the chunks to run (decodes first, then prompt chunks) and whose they
/// are. The model runner consumes `chunks`; the engine matches the sampled tokens back to `requests`.
public struct StepPlan: Sendable, Equatable {
    public var chunks: [SequenceChunk] = []
    /// The request of each chunk, in the same order.
    public var requests: [Int] = []
    /// Requests that cannot run because KV memory can never hold their next token (the pool is their context): the
    /// caller ends them (`Scheduler.finish`, then `.length`) before the next `schedule()`.
    public var endedForMemory: [Int] = []
    /// Requests that gave their slot back this step to make room (they wait again and will be recomputed).
    public var preempted: [Int] = []

    public init() {}

    /// Indices of the chunks whose last token is sampled.
    public var sampledChunks: [Int] { chunks.indices.filter { chunks[$0].wantsLogits } }
}

/// Continuous batching over a `KVAllocator`, with no model: which requests run each step, how many of their tokens,
/// and in which slots (vLLM v1's `schedule()` / `update_from_output()`, nano-vllm's scheduler).
///
/// A request is waiting → (admitted ahead →) running → gone; preemption sends a running request back to the front of
/// the queue with nothing cached. Every move between those queues goes through `move(_:to:)`.
///
/// Each `schedule()`: running decodes (one token each), then prompt or recompute chunks of running requests, then
/// requests admitted ahead, then new admissions, all under the token budget; the batch is backed in the KV store
/// (out of memory: first the requests only admitted ahead give their slots back, then the youngest running request is
/// preempted, and the batch is rebuilt without admitting); then, where the store maps on demand, the next step's
/// admissions are taken now so their first chunk is mapped in the background while this step computes.
public final class Scheduler {
    public enum Phase: Sendable, Equatable { case waiting, admitted, running }

    /// One request as the scheduler sees it: its tokens, how many of them are in the cache, its slot.
    final class Sequence {
        let id: Int
        let prompt: [TokenID]
        var output: [TokenID] = []
        /// Output tokens at most (the request's `maxTokens`): what its slot is sized for.
        let maxTokens: Int
        /// Order of arrival: preemption takes the youngest.
        let arrival: Int
        var phase = Phase.waiting
        var slot: Int?
        /// Tokens of `prompt + output` whose K/V are in the cache.
        var cached = 0

        init(id: Int, prompt: [TokenID], maxTokens: Int, arrival: Int) {
            self.id = id
            self.prompt = prompt
            self.maxTokens = maxTokens
            self.arrival = arrival
        }

        var length: Int { prompt.count + output.count }
        func token(at i: Int) -> TokenID { i < prompt.count ? prompt[i] : output[i - prompt.count] }
    }

    public let kv: any KVAllocator
    /// Tokens per step (Sarathi-style chunked prefill: decodes first, then prompt chunks fill the rest); at least 1.
    public let tokenBudget: Int
    /// Requests holding a slot at once at most (also bounded by the allocator's slots); at least 1.
    public let maxRunning: Int
    public private(set) var preemptions = 0

    private var waiting: [Sequence] = []
    /// Given a slot one step ahead, their first chunk being mapped in the background; they run next step.
    private var admitted: [Sequence] = []
    private var running: [Sequence] = []
    private var sequences: [Int: Sequence] = [:]
    private var arrivals = 0

    public init(kv: any KVAllocator, tokenBudget: Int, maxRunning: Int) {
        self.kv = kv
        // A budget or a batch of 0 would never schedule anything: every step would return at once, for ever.
        self.tokenBudget = max(1, tokenBudget)
        self.maxRunning = max(1, maxRunning)
    }

    /// The longest sequence one request can reach: the store's context, or less when its pool cannot hold that much
    /// even for a request alone.
    public var maxContext: Int { min(kv.maxContext, kv.capacityTokens) }

    /// Queues request `id`. Prompts the context cannot hold are refused, and so are prompts the KV pool could not
    /// hold even with nothing else running (they would wait for ever).
    public func add(id: Int, prompt: [TokenID], maxTokens: Int) throws {
        precondition(sequences[id] == nil, "request \(id) added twice")
        guard !prompt.isEmpty else { throw EngineError.emptyPrompt }
        guard prompt.count < kv.maxContext else {
            throw EngineError.promptTooLong(tokens: prompt.count, context: kv.maxContext)
        }
        guard prompt.count < kv.capacityTokens else {
            throw EngineError.promptTooLargeForMemory(tokens: prompt.count, capacity: kv.capacityTokens)
        }
        let s = Sequence(id: id, prompt: prompt, maxTokens: maxTokens, arrival: arrivals)
        arrivals += 1
        sequences[id] = s
        waiting.append(s)
    }

    /// Forgets request `id` wherever it is, giving its slot back; returns its output tokens (nil for unknown ids).
    @discardableResult
    public func finish(_ id: Int) throws -> [TokenID]? {
        guard let s = sequences.removeValue(forKey: id) else { return nil }
        try releaseSlot(s)
        dequeue(s)
        return s.output
    }

    public var hasWork: Bool { !sequences.isEmpty }
    public var waitingCount: Int { waiting.count }
    public var runningCount: Int { running.count }
    public var admittedCount: Int { admitted.count }
    public func phase(of id: Int) -> Phase? { sequences[id]?.phase }
    public func slot(of id: Int) -> Int? { sequences[id]?.slot }
    /// Prompt + output tokens of a request.
    public func length(of id: Int) -> Int? { sequences[id]?.length }
    public func output(of id: Int) -> [TokenID]? { sequences[id]?.output }

    /// Plans the next step and backs it in the KV store. Always makes progress or returns at once: a request that
    /// has the pool to itself and still cannot grow, or a waiting one that cannot be admitted with the whole pool
    /// free, is returned in `endedForMemory` for the caller to end — so a caller looping `while hasWork` never spins.
    public func schedule() throws -> StepPlan {
        var plan = StepPlan()
        var admit = true
        while true {
            let batch = chooseBatch(admitting: admit)
            guard !batch.isEmpty else {
                if admit, running.isEmpty, admitted.isEmpty, let head = waiting.first {
                    plan.endedForMemory.append(head.id)
                }
                return plan
            }
            do {
                try kv.reserve(batch.map { ($0.1.slot, $0.1.start + $0.1.tokens.count) })
                plan.chunks = batch.map(\.1)
                plan.requests = batch.map(\.0.id)
                break
            } catch is KVOutOfMemory {
                if try releaseAdmitted() { continue }  // first give back what was only reserved ahead
                if let victim = try preemptYoungest() {
                    plan.preempted.append(victim)
                    admit = false  // re-admitting what was just preempted would only fail again
                    continue
                }
                // One request runs alone, every other slot idle, and its next token does not fit: the pool is its
                // context. It ends as a full context does (preempting it would only recompute it into the same wall).
                guard let lone = running.first else { throw EngineError.requestTooLargeForMemory }
                plan.endedForMemory.append(lone.id)
                return plan
            }
        }
        try admitAhead()
        return plan
    }

    /// Records what a planned step computed: every chunk's tokens are cached now, and `sampled` (one token per chunk
    /// with `wantsLogits`, in order) is appended to its request's output.
    public func update(_ plan: StepPlan, sampled: [TokenID]) {
        precondition(sampled.count == plan.sampledChunks.count, "one sampled token per chunk that wants logits")
        var next = sampled.makeIterator()
        for (id, chunk) in zip(plan.requests, plan.chunks) {
            guard let s = sequences[id] else { continue }  // finished meanwhile (cancelled)
            s.cached = chunk.start + chunk.tokens.count
            if chunk.wantsLogits { s.output.append(next.next()!) }
        }
    }

    // MARK: Choosing the batch

    private func chooseBatch(admitting: Bool) -> [(Sequence, SequenceChunk)] {
        var budget = tokenBudget
        var batch: [(Sequence, SequenceChunk)] = []
        for s in running where s.cached == s.length - 1 && budget > 0 {
            batch.append((s, SequenceChunk(slot: s.slot!, start: s.cached, tokens: [s.token(at: s.cached)],
                                           wantsLogits: true)))
            budget -= 1
        }
        for s in running where s.cached < s.length - 1 && budget > 0 {
            batch.append((s, chunk(s, budget: &budget)))
        }
        while budget > 0, let s = admitted.first {
            move(s, to: .running)
            batch.append((s, chunk(s, budget: &budget)))
        }
        while admitting, budget > 0, let s = admitNext(to: .running) {
            batch.append((s, chunk(s, budget: &budget)))
        }
        return batch
    }

    private func chunk(_ s: Sequence, budget: inout Int) -> SequenceChunk {
        let n = min(s.length - s.cached, budget)
        budget -= n
        return SequenceChunk(slot: s.slot!, start: s.cached, tokens: (s.cached..<(s.cached + n)).map(s.token(at:)),
                             wantsLogits: s.cached + n == s.length)
    }

    /// The first waiting request, given a slot and moved to `phase`, if one may run: a place under `maxRunning`, and
    /// memory for its sequence so far.
    private func admitNext(to phase: Phase) -> Sequence? {
        guard let s = waiting.first, running.count + admitted.count < maxRunning,
              kv.canAdmit(tokens: min(s.length, kv.maxContext)),
              let slot = try? kv.allocateSlot(expectedLength: s.length + s.maxTokens)
        else { return nil }
        s.slot = slot
        s.cached = 0  // a new slot holds nothing (a preempted request is recomputed from its first token)
        move(s, to: phase)
        return s
    }

    /// Admits waiting requests for the next step now, so their first chunk's memory is mapped in the background
    /// while this step computes (only where the store maps on demand; elsewhere admission stays in the batch).
    private func admitAhead() throws {
        guard kv.mapsOnDemand, admitted.isEmpty else { return }
        var budget = tokenBudget - running.count  // next step's decodes come first (about one token each)
        while budget > 0, let s = admitNext(to: .admitted) {
            let first = min(s.length, budget)
            try kv.mapAhead(s.slot!, tokens: first)
            budget -= first
        }
    }

    // MARK: Making room

    /// Gives the slots of requests admitted ahead back (they wait again, first in line). False if there were none.
    private func releaseAdmitted() throws -> Bool {
        guard !admitted.isEmpty else { return false }
        for s in admitted.reversed() {
            try releaseSlot(s)
            move(s, to: .waiting, first: true)
        }
        return true
    }

    /// The most recently admitted running request gives its slot back and waits first in line, to be recomputed.
    /// nil when one request runs alone: nothing can make room for it.
    private func preemptYoungest() throws -> Int? {
        guard running.count > 1, let victim = running.max(by: { $0.arrival < $1.arrival }) else { return nil }
        try releaseSlot(victim)
        move(victim, to: .waiting, first: true)
        preemptions += 1
        return victim.id
    }

    private func releaseSlot(_ s: Sequence) throws {
        if let slot = s.slot { try kv.free(slot) }
        s.slot = nil
    }

    /// The one place a request changes queue.
    private func move(_ s: Sequence, to phase: Phase, first: Bool = false) {
        dequeue(s)
        s.phase = phase
        switch phase {
        case .waiting: if first { waiting.insert(s, at: 0) } else { waiting.append(s) }
        case .admitted: admitted.append(s)
        case .running: running.append(s)
        }
    }

    /// Takes a request out of the queue its phase names.
    private func dequeue(_ s: Sequence) {
        switch s.phase {
        case .waiting: waiting.removeAll { $0 === s }
        case .admitted: admitted.removeAll { $0 === s }
        case .running: running.removeAll { $0 === s }
        }
    }
}
