import Randomness
import Support
import VAttention
#if canImport(Glibc)
import Glibc
#endif

/// `vattn bench alloc`: page create/map/unmap/release latency, mapping bandwidth, and a decode run with the
/// Llama-3-8B KV shape (32 layers, 8 KV heads × 128, bf16). Every step each running request grows by one token,
/// finished requests leave and new ones arrive with random prompt and output lengths; between steps the program
/// sleeps for `stepMs` to stand in for the model's forward pass, which is when the background mapper works. It
/// reports the time `step` spends on the critical path, with the mapper off and on, for both layouts, and how much
/// mapped memory holds no token (waste). Writes the results as JSON (`Result`) and pictures (SVG) beside them.
public struct AllocBench {
    public var backend: BackendChoice = .host
    /// Physical page size, KiB (nil: 2048, the GPU's page).
    public var pageKiB: Int?
    /// Physical memory budget of the decode run, GiB (nil: 60 for cuda, 48 for host or the machine's memory if less).
    public var budgetGiB: Double?
    public var slots = 256
    public var maxContext = 4096
    /// Measured steps per configuration.
    public var steps = 500
    /// Simulated model time per step, ms.
    public var stepMs = 20.0
    public var arrivalsPerStep = 4
    /// Pages timed one by one for the per-operation latencies.
    public var microPages = 256
    public var seed: UInt64 = 42
    /// Where to write the JSON result (nil: bench-alloc-<backend>.json).
    public var json: String?

    public init() {}

    /// What the JSON file holds.
    public struct Result: Codable, Sendable {
        public struct Decode: Codable, Sendable {
            public let slots: Int
            public let maxContext: Int
            public let steps: Int
            public let stepMs: Double
            public let budgetBytes: Int
            public let seed: UInt64
            public let runs: [Run]
        }
        public struct Run: Codable, Sendable {
            public let layout: String
            public let backgroundMapper: Bool
            public let criticalMicros: Summary
            public let criticalMicrosDecodeOnlySteps: Summary
            public let criticalMaps: Int
            public let backgroundMaps: Int
            public let unmaps: Int
            public let preemptions: Int
            public let completed: Int
            public let roundingWastePerRequestBytes: Rounded
            public let meanMappedMinusUsedBytes: Rounded
            public let meanActive: Rounded
            public let startupMs: Rounded
        }
        public let backend: String
        public let pageSize: Int
        public let microPages: Int
        /// Per operation, µs.
        public let latencyMicros: [String: Summary]
        public let mapGBps: Rounded
        public let zeroPageStartupMsPerGiB: Rounded
        public let decode: Decode
    }

    public func run() throws {
        let handle = try BackendHandle.make(backend)
        let pageSize = (pageKiB ?? 2048) * 1024
        var budget = Int((budgetGiB ?? (backend == .cuda ? 60 : 48)) * Double(1 << 30))
        // The manager refuses a budget above the machine's memory; the host default is sparse, so it shrinks to fit.
        if budgetGiB == nil, backend == .host, let ram = handle.backend.physicalMemoryLimit { budget = min(budget, ram) }
        print("vattn bench alloc — backend \(handle.description), page \(formatBytes(pageSize))")

        let micro = try microbenchmark(handle.backend, pageSize: pageSize)
        print("\nPer-operation latency, µs (\(microPages) pages of \(formatBytes(pageSize)))")
        print("  " + pad("operation", 26) + lpad("p50", 10) + lpad("p99", 10) + lpad("max", 10))
        for (name, s) in micro.ops {
            print("  " + pad(name, 26) + lpad(fmt(s.p50, 1), 10) + lpad(fmt(s.p99, 1), 10) + lpad(fmt(s.max, 1), 10))
        }
        print("  mapping bandwidth: \(fmt(micro.mapGBps, 2)) GB/s mapped (map + access, one page per call)")
        print("  zero page at start-up: \(fmt(micro.zeroPageMsPerGiB, 2)) ms per GiB of reserved range")

        var runs: [DecodeRun] = []
        for layout in KVCacheSpec.Layout.allCases {
            for background in [false, true] {
                let spec = KVCacheSpec.llama3_8B(maxSlots: slots, maxContext: maxContext, pageSize: pageSize,
                                                 layout: layout)
                runs.append(try decodeRun(spec: spec, handle: handle, budget: budget, background: background))
            }
        }
        print("\nDecode growth: Llama-3-8B KV, \(slots) slots, max context \(maxContext), \(steps) steps, "
              + "\(fmt(stepMs, 1)) ms simulated compute per step, budget \(formatBytes(budget))")
        print("  " + pad("layout", 9) + pad("mapper", 7) + lpad("crit p50", 10) + lpad("p99", 9) + lpad("max", 9)
              + lpad("% step", 8) + lpad("maps crit", 10) + lpad("bg", 8) + lpad("preempt", 8)
              + lpad("waste/req", 11) + lpad("mapped-used", 12))
        for r in runs {
            print("  " + pad(r.layout, 9) + pad(r.background ? "on" : "off", 7)
                  + lpad(fmt(r.critical.p50, 1) + "µs", 10) + lpad(fmt(r.critical.p99, 0), 9)
                  + lpad(fmt(r.critical.max, 0), 9)
                  + lpad(fmt(100 * r.critical.mean / (stepMs * 1000), 2), 8)
                  + lpad("\(r.criticalMaps)", 10) + lpad("\(r.backgroundMaps)", 8) + lpad("\(r.preemptions)", 8)
                  + lpad(formatBytes(Int(r.roundingWastePerRequest)), 11)
                  + lpad(formatBytes(Int(r.mappedMinusUsed)), 12))
        }
        print("  crit = time inside step() (µs); % step = mean critical time / simulated step; waste/req = page "
              + "rounding per active request; mapped-used = mean of all mapped bytes holding no live token")

        let path = json ?? "bench-alloc-\(backend.rawValue).json"
        try writeJSON(Result(
            backend: handle.description, pageSize: pageSize, microPages: microPages,
            latencyMicros: Dictionary(micro.ops, uniquingKeysWith: { a, _ in a }), mapGBps: Rounded(micro.mapGBps),
            zeroPageStartupMsPerGiB: Rounded(micro.zeroPageMsPerGiB),
            decode: .init(slots: slots, maxContext: maxContext, steps: steps, stepMs: stepMs, budgetBytes: budget,
                          seed: seed, runs: runs.map(\.result))), to: path)
        let picture = svgPath(path)
        try writeText(pictures(runs), to: picture)
        print("\nwrote \(path) and \(picture)")
    }

    struct Micro {
        var ops: [(String, Summary)]
        var mapGBps: Double
        var zeroPageMsPerGiB: Double
    }

    func microbenchmark(_ backend: any MemoryBackend, pageSize: Int) throws -> Micro {
        let n = microPages
        let bytes = n * pageSize
        var t0 = monotonicNanos()
        let base = try backend.reserve(bytes: bytes)
        let reserveMicros = Double(monotonicNanos() - t0) / 1000
        var create: [Double] = [], map: [Double] = [], unmap: [Double] = [], release: [Double] = []
        var pages: [PhysicalPage] = []
        for _ in 0..<n {
            t0 = monotonicNanos()
            pages += try backend.createPages(count: 1, pageSize: pageSize)
            create.append(Double(monotonicNanos() - t0) / 1000)
        }
        let mapStart = monotonicNanos()
        for (i, p) in pages.enumerated() {
            t0 = monotonicNanos()
            try backend.map(p, at: base + UInt(i * pageSize), pageSize: pageSize)
            map.append(Double(monotonicNanos() - t0) / 1000)
        }
        let mapSeconds = Double(monotonicNanos() - mapStart) / 1e9
        for i in 0..<n {
            t0 = monotonicNanos()
            try backend.unmap(address: base + UInt(i * pageSize), pageSize: pageSize)
            unmap.append(Double(monotonicNanos() - t0) / 1000)
        }
        for p in pages {
            t0 = monotonicNanos()
            try backend.releasePages([p], pageSize: pageSize)
            release.append(Double(monotonicNanos() - t0) / 1000)
        }
        try backend.releaseReservation(address: base, bytes: bytes)

        // Zero page: what mapping a read-as-zero page over a whole reservation costs at start-up.
        let zeroHandle = try BackendHandle.make(self.backend, zeroPage: true)
        let zeroBytes = 1 << 30
        t0 = monotonicNanos()
        let zbase = try zeroHandle.backend.reserve(bytes: zeroBytes)
        let zeroMs = Double(monotonicNanos() - t0) / 1e6
        try zeroHandle.backend.releaseReservation(address: zbase, bytes: zeroBytes)

        return Micro(ops: [("reserve (\(formatBytes(bytes)))", Summary([reserveMicros])),
                           ("create page", Summary(create)), ("map + set access", Summary(map)),
                           ("unmap", Summary(unmap)), ("release page", Summary(release))],
                     mapGBps: Double(bytes) / mapSeconds / 1e9, zeroPageMsPerGiB: zeroMs)
    }

    struct DecodeRun {
        var layout: String
        var background: Bool
        var critical: Summary
        var criticalDecodeOnly: Summary
        var criticalMaps: Int
        var backgroundMaps: Int
        var unmaps: Int
        var preemptions: Int
        var completed: Int
        var roundingWastePerRequest: Double
        var mappedMinusUsed: Double
        var meanActive: Double
        var startupMs: Double
        /// Per measured step: critical µs, mapped bytes, used bytes (for the pictures).
        var perStep: [(critical: Double, mapped: Double, used: Double)] = []

        var result: Result.Run {
            Result.Run(layout: layout, backgroundMapper: background, criticalMicros: critical,
                       criticalMicrosDecodeOnlySteps: criticalDecodeOnly, criticalMaps: criticalMaps,
                       backgroundMaps: backgroundMaps, unmaps: unmaps, preemptions: preemptions, completed: completed,
                       roundingWastePerRequestBytes: Rounded(roundingWastePerRequest, 0),
                       meanMappedMinusUsedBytes: Rounded(mappedMinusUsed, 0), meanActive: Rounded(meanActive, 1),
                       startupMs: Rounded(startupMs, 1))
        }
    }

    struct Request {
        var prompt: Int
        var target: Int
        var length = 0
    }

    func decodeRun(spec: KVCacheSpec, handle: BackendHandle, budget: Int, background: Bool) throws -> DecodeRun {
        let t0 = monotonicNanos()
        let manager = try KVCacheManager(spec: spec, backend: handle.backend, memoryBudget: budget,
                                         policy: MapAheadPolicy(background: background, lookAheadTokens: 16))
        let startupMs = Double(monotonicNanos() - t0) / 1e6
        defer { try? manager.shutdown() }
        var rng = SplitMix64(seed: seed)
        func newRequest() -> Request {
            let prompt = min(Int.random(in: 128...1536, using: &rng), spec.maxContext - 1)  // a short --max-context
            let output = Int.random(in: 64...1024, using: &rng)
            return Request(prompt: prompt, target: min(spec.maxContext, prompt + output))
        }
        var queue: [Request] = []
        var running: [Int: Request] = [:]
        // Warm-up (not measured): slots hold requests somewhere in their lives, as in a server that has been up — as
        // many as the budget holds.
        for _ in 0..<spec.maxSlots {
            var r = newRequest()
            r.length = Int.random(in: r.prompt...r.target, using: &rng)
            let slot = try manager.allocateSlot(expectedLength: r.target)
            do {
                try manager.step([(slot, r.length)])
            } catch KVCacheError.outOfPages {
                try manager.free(slot)
                break
            }
            running[slot] = r
        }
        manager.waitForBackgroundMapper()
        let warmStats = manager.stats
        // Admitted requests get their slot one step before their prefill runs, and `prepare` lets the mapper back
        // the prompt in the background meanwhile (a scheduler knows its next batch one step ahead).
        var admittedLastStep: Set<Int> = []
        var critical: [Double] = [], decodeOnly: [Double] = []
        var perStep: [(critical: Double, mapped: Double, used: Double)] = []
        var preemptions = 0, completed = 0
        var roundingWaste = 0.0, mappedMinusUsed = 0.0, activeSum = 0.0
        let stepNanos = UInt64(stepMs * 1e6)
        for _ in 0..<steps {
            var batch: [(slot: Int, length: Int)] = []
            let prefills = admittedLastStep.count
            for (slot, r) in running {
                if r.length >= r.target { continue }
                running[slot]!.length = admittedLastStep.contains(slot) ? r.prompt : r.length + 1
                batch.append((slot, running[slot]!.length))
            }
            var nanos: UInt64 = 0
            while true {
                let start = monotonicNanos()
                do {
                    try manager.step(batch)
                    nanos += monotonicNanos() - start
                    break
                } catch KVCacheError.outOfPages {
                    nanos += monotonicNanos() - start
                    // Preempt the youngest request (recompute later), as a scheduler would.
                    let victim = running.filter { $0.value.length > 0 }.min { $0.value.length < $1.value.length }!
                    try manager.free(victim.key)
                    running[victim.key] = nil
                    queue.insert(Request(prompt: victim.value.prompt, target: victim.value.target), at: 0)
                    batch.removeAll { $0.slot == victim.key }
                    preemptions += 1
                }
            }
            critical.append(Double(nanos) / 1000)
            if prefills == 0 { decodeOnly.append(Double(nanos) / 1000) }
            let st = manager.stats
            perStep.append((Double(nanos) / 1000, Double(st.memory.mappedBytes), Double(st.memory.usedBytes)))
            var rounding = 0
            for (_, r) in running {
                rounding += spec.pagesPerTensor(tokens: r.length) * spec.tensorCount * spec.pageSize - r.length * spec.tokenBytes
            }
            if !running.isEmpty { roundingWaste += Double(rounding) / Double(running.count) }
            mappedMinusUsed += Double(st.memory.wasteBytes)
            activeSum += Double(running.count)
            // After the iteration: finished requests leave (pages stay mapped for the next request in the slot) and
            // new ones are admitted for the next step.
            for (slot, r) in running where r.length >= r.target {
                try manager.free(slot)
                running[slot] = nil
                completed += 1
            }
            admittedLastStep = []
            while admittedLastStep.count < arrivalsPerStep, running.count < spec.maxSlots {
                if queue.isEmpty { queue.append(newRequest()) }
                // Admit only what fits, or every step would preempt what it just admitted.
                guard manager.canAdmit(tokens: queue[0].prompt + arrivalsPerStep * 16) else { break }
                let r = queue.removeFirst()
                let slot = try manager.allocateSlot(expectedLength: r.target)
                try manager.mapAhead(slot, tokens: r.prompt)
                running[slot] = Request(prompt: r.prompt, target: r.target, length: 0)
                admittedLastStep.insert(slot)
            }
            // The model's forward pass would run now; the background mapper works meanwhile.
            let wake = monotonicNanos() + stepNanos
            while case let now = monotonicNanos(), now < wake { usleep(UInt32(min(1000, (wake - now) / 1000 + 1))) }
        }
        let st = manager.stats
        return DecodeRun(layout: spec.layout.rawValue, background: background, critical: Summary(critical),
                         criticalDecodeOnly: Summary(decodeOnly), criticalMaps: st.memory.criticalMaps - warmStats.memory.criticalMaps,
                         backgroundMaps: st.memory.backgroundMaps - warmStats.memory.backgroundMaps,
                         unmaps: st.unmaps - warmStats.unmaps, preemptions: preemptions,
                         completed: completed, roundingWastePerRequest: roundingWaste / Double(steps),
                         mappedMinusUsed: mappedMinusUsed / Double(steps), meanActive: activeSum / Double(steps),
                         startupMs: startupMs, perStep: perStep)
    }

    /// Critical-path time per step over time, its CDF, and mapped vs used memory, for every configuration.
    func pictures(_ runs: [DecodeRun]) -> String {
        func name(_ r: DecodeRun) -> String { "\(r.layout), mapper \(r.background ? "on" : "off")" }
        let latency = SVGChart(
            title: "Time inside step() per decode iteration (\(slots) requests)", xLabel: "step", yLabel: "µs (log)",
            series: runs.map { r in .init(name: name(r), points: r.perStep.enumerated().map { (Double($0), max($1.critical, 1)) }) },
            logY: true)
        let cdf = SVGChart(
            title: "CDF of time inside step()", xLabel: "µs", yLabel: "fraction of steps",
            series: runs.map { r in .init(name: name(r), points: SVGChart.cdf(r.perStep.map(\.critical))) })
        let memory = SVGChart(
            title: "KV memory: mapped vs holding live tokens (mapper on)", xLabel: "step", yLabel: "GiB",
            series: runs.filter(\.background).flatMap { r in [
                SVGChart.Series(name: "\(r.layout) mapped", points: r.perStep.enumerated().map { (Double($0), $1.mapped / 1073741824) }),
                SVGChart.Series(name: "\(r.layout) used", points: r.perStep.enumerated().map { (Double($0), $1.used / 1073741824) }),
            ] })
        return SVGChart.document([latency, cdf, memory])
    }
}
