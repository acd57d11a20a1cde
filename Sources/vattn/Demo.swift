import ArgumentParser
import Engine
import Kernels
import Model
import Support
import VAttention

/// `vattn` with no arguments: the whole system in under a minute — fetch the model, serve a burst of chat requests
/// through continuous batching with the KV cache in vAttention memory, stream one answer, then show what it cost.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A one-minute demo (what `vattn` with no arguments runs): several chats served at once, one streamed live.",
        discussion: """
            Fetches SmolLM2-135M on first use (98 MB), submits a burst of chat requests of varied lengths at once \
            to the continuous-batching engine, writes one answer as it is generated while the others run in the \
            same batches, then prints throughput, time to first token, KV-cache memory (reserved, mapped, used, \
            wasted), where page mappings happened (ahead of time in the background, or on the critical path) and \
            how many requests were preempted.
            """)

    @OptionGroup var options: ModelOptions
    @Option(help: "How many chat requests to send at once (the sample prompts repeat after \(DemoPrompts.all.count)).")
    var requests = 8
    @Option(help: "Longest answer per request, tokens. Fewer: a quicker demo.")
    var maxTokens = 48
    @Option(help: "Which request's answer to write out as it is generated (1 = the first; 0 = none).")
    var live = 1
    @Option(help: "Sampling temperature (0 = always the most likely token).")
    var temperature: Float = 0.6
    @Option(help: "Random seed: the same seed gives the same answers.")
    var seed: UInt64 = 1

    func validate() throws {
        guard requests >= 1 else { throw ValidationError("--requests must be at least 1") }
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1") }
        guard (0...requests).contains(live) else { throw ValidationError("--live must be between 0 and --requests (\(requests))") }
    }

    func run() throws {
        let loadStart = monotonicNanos()
        let built = try options.engineBuilder(defaultTokenBudget: 64).build()
        let (engine, loaded) = (built.engine, built.model)
        let template = try loaded.chatTemplate()
        let tokenizer = try loaded.requireTokenizer(for: "demo")
        let device = (engine.model as? CPULlamaModel).map { "the CPU (\(defaultThreadCount) threads, \($0.matmulInUse))" }
            ?? engine.model.deviceDescription
        printErr("vattn demo — \(options.model) on \(device), KV cache: \(engine.kv.name), "
                 + "\(options.slots) slots, \(engine.configuration.tokenBudget) tokens per step; loaded in "
                 + "\(fmt(Double(monotonicNanos() - loadStart) / 1e9, 1)) s")

        // Every request is queued before the first step: the scheduler admits them together and batches them.
        var prompts: [(question: String, tokens: [TokenID])] = []
        for i in 0..<requests {
            let question = DemoPrompts.all[i % DemoPrompts.all.count]
            prompts.append((question, template.encode([.user(question)], addGenerationPrompt: true, tokenizer: tokenizer)))
        }
        let start = monotonicNanos()
        var ids: [Int] = []
        for (i, p) in prompts.enumerated() {
            let parameters = SamplingParameters(temperature: temperature, topK: 40, topP: 0.95,
                                                seed: seed &+ UInt64(i), maxTokens: maxTokens)
            ids.append(try engine.add(prompt: p.tokens, parameters: parameters))
        }
        let liveID = live > 0 ? ids[live - 1] : nil
        printErr("\(requests) chat requests submitted at once (prompts of \(prompts.map(\.tokens.count).min()!)–"
                 + "\(prompts.map(\.tokens.count).max()!) tokens, answers up to \(maxTokens) tokens)")
        if let liveID, let index = ids.firstIndex(of: liveID) {
            printErr("\nRequest \(index + 1), live while the other \(requests - 1) run in the same batches:")
            printErr("  \u{201C}\(prompts[index].question)\u{201D}\n")
        }

        var firstToken: [Int: UInt64] = [:], lastToken: [Int: UInt64] = [:]
        var peakMapped = 0, peakUsed = 0, peakRunning = 0
        var mappedSum = 0.0, wasteSum = 0.0
        var liveDone = liveID == nil
        var finished = 0
        while engine.hasWork {
            let events = try engine.step()
            let now = monotonicNanos()
            for e in events {
                if firstToken[e.request] == nil { firstToken[e.request] = now }
                lastToken[e.request] = now
                if e.request == liveID {
                    writeOut(e.text)
                    if e.finished != nil {
                        writeOut("\n")
                        liveDone = true
                        if engine.runningCount + engine.waitingCount > 0 {
                            printErr("\n(\(engine.runningCount + engine.waitingCount) requests still running…)")
                        }
                    }
                }
                if e.finished != nil {
                    finished += 1
                    if liveDone && e.request != liveID { printErr("  \(finished)/\(requests) done") }
                }
            }
            let m = engine.kv.memory
            peakMapped = max(peakMapped, m.mappedBytes)
            peakUsed = max(peakUsed, m.usedBytes)
            peakRunning = max(peakRunning, engine.runningCount)
            mappedSum += Double(m.mappedBytes)
            wasteSum += Double(m.wasteBytes)
        }
        let seconds = Double(monotonicNanos() - start) / 1e9

        printErr("\n  #  prompt  answer  first token  finish  answer begins")
        for (i, id) in ids.enumerated() {
            let out = engine.output(of: id)?.count ?? 0
            let ttft = firstToken[id].map { millis(Double($0 - start) / 1e6) } ?? "-"
            let text = (engine.text(of: id) ?? "").split(whereSeparator: \.isNewline).joined(separator: " ")
            let excerpt = text.count > 44 ? String(text.prefix(43)) + "…" : text
            printErr(lpad("\(i + 1)", 3) + lpad("\(prompts[i].tokens.count)", 8) + lpad("\(out)", 8)
                     + lpad(ttft, 13) + "  " + pad(engine.finishReason(of: id)?.rawValue ?? "?", 6) + "  " + excerpt)
        }

        let promptTokens = prompts.reduce(0) { $0 + $1.tokens.count }
        let outputTokens = ids.reduce(0) { $0 + (engine.output(of: $1)?.count ?? 0) }
        let ttft = Summary(ids.compactMap { firstToken[$0].map { Double($0 - start) / 1e6 } })
        let tpot = Summary(ids.compactMap { id -> Double? in
            let n = engine.output(of: id)?.count ?? 0
            guard n > 1, let f = firstToken[id], let l = lastToken[id] else { return nil }
            return Double(l - f) / 1e6 / Double(n - 1)
        })
        let m = engine.kv.memory
        let stats = engine.stats
        // Throughput as vLLM's serving benchmark reports it: tokens over the wall time of the whole burst.
        printErr("""

            Summary — \(requests) requests in \(fmt(seconds, 1)) s (\(stats.steps) engine steps, up to \(peakRunning) \
            requests per batch)
              throughput     prompt \(fmt(Double(promptTokens) / seconds, 1)) tok/s (\(promptTokens) tokens), \
            output \(fmt(Double(outputTokens) / seconds, 1)) tok/s (\(outputTokens) tokens)
              latency        first token p50 \(millis(ttft.p50)), max \(millis(ttft.max)); \
            per output token p50 \(fmt(tpot.p50, 1)) ms
              KV memory      reserved \(formatBytes(m.reservedBytes)) (virtual address space), peak mapped \
            \(formatBytes(peakMapped)), peak used \(formatBytes(peakUsed))
                             wasted (mapped, holding no token) \(fmt(100 * wasteSum / max(mappedSum, 1), 1))% of \
            mapped on average while running
                             now: mapped \(formatBytes(m.mappedBytes)), used \(formatBytes(m.usedBytes)), wasted \
            \(formatBytes(m.wasteBytes)) (kept mapped in idle slots for the next requests)
            """)
        if engine.kv is VAttentionKVStore {
            printErr("  page maps      \(m.backgroundMaps) ahead of time by the background thread, \(m.criticalMaps) "
                     + "on the critical path (a step waited for them)")
        }
        printErr("  preemptions    \(stats.preemptions)"
                 + (stats.preemptions > 0 ? " (out of KV memory: requests recomputed later, nothing lost)" : ""))
        printErr("\nMore: vattn chat (talk to it), vattn serve (OpenAI-compatible server), vattn --help.")
    }
}

/// Chat prompts of varied lengths (a one-liner to a paragraph to summarise), so prefill chunks and decodes mix.
enum DemoPrompts {
    static let all = [
        "Explain virtual memory in two sentences.",
        "Write a haiku about the sea.",
        "What is the capital of France?",
        "Give three tips for writing clear code.",
        """
        Summarise this in one sentence: The KV cache stores the keys and values of every token a language model \
        has seen, so that each new token attends to them without recomputing them. It grows with every generated \
        token, and a server running many requests at once must decide how much memory to give each one. Reserving \
        the maximum up front wastes memory; allocating small blocks on demand needs attention kernels that can \
        follow block tables.
        """,
        "Why is the sky blue?",
        "List the planets of the solar system in order.",
        """
        I am planning a weekend trip to a city by the sea with two friends who like museums, long walks and good \
        food, and we do not want to drive. What should we pack, and how should we plan the two days?
        """,
    ]
}

private func millis(_ ms: Double) -> String { "\(Int(ms.rounded())) ms" }
