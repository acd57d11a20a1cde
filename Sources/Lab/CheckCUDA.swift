import CUDADriver
import CUDAKernels
import Randomness
import Support
import VAttention

/// `vattn check cuda`: on a GPU, random request lifecycles where a kernel writes and re-reads every token through the
/// manager's virtual addresses, with the background mapper on, for both layouts; the zero page; CUDA graphs.
public struct CUDACheck {
    /// Lifecycle operations per layout.
    public var operations = 300
    /// Random seed (default: from the clock).
    public var seed: UInt64?
    /// Cases to run: lifecycle, zero-page, graph (comma separated).
    public var cases = "lifecycle,zero-page,graph"

    public init() {}

    /// Prints each case and a PASS/FAIL line; false when a case failed.
    public func run() throws -> Bool {
        let chosen = Set(cases.split(separator: ",").map(String.init))
        let handle: BackendHandle
        do {
            handle = try BackendHandle.make(.cuda)
        } catch let e as CUDAError where e.code == CUDAError.driverNotFound("").code {
            for c in ["lifecycle", "zero-page", "graph"] where chosen.contains(c) {
                print("  SKIP \(c): \(e.message)")
            }
            print("SKIP vattn check cuda (no CUDA driver on this machine)")
            return true
        }
        let device = handle.device!, stream = handle.stream!
        let nvrtc = try NVRTC()
        let kernels = try CheckKernels(device: device, compiler: nvrtc)
        let counter = try DeviceBuffer(device.cuda, byteCount: 4)
        let seed = self.seed ?? monotonicNanos()
        print("vattn check cuda — \(handle.description), NVRTC \(nvrtc.version.major).\(nvrtc.version.minor), seed \(seed)")
        var failures = 0
        for layout in KVCacheSpec.Layout.allCases where chosen.contains("lifecycle") {
            // 4 layers × 8 KV heads × 128 bf16: 2 KB per token per layer; 2 MB pages; a tight budget forces reclaim.
            let spec = KVCacheSpec(layers: 4, kvHeads: 8, headDim: 128, dtype: .bf16, maxSlots: 8, maxContext: 8192,
                                   pageSize: 2 << 20, layout: layout)
            let budget = spec.tensorCount * spec.maxPagesPerTensor * 3 * spec.pageSize
            let m = try KVCacheManager(spec: spec, backend: handle.backend, memoryBudget: budget,
                                       policy: MapAheadPolicy(background: true, lookAheadTokens: 64))
            var rng = SplitMix64(seed: seed)
            var active: [Int: (request: UInt64, length: Int)] = [:]
            var nextRequest: UInt64 = 1
            var verified = 0, outOfPages = 0
            let elements = spec.kvHeads * spec.headDim
            func launchWrite(slot: Int, request: UInt64, from: Int, to: Int) throws {
                guard to > from else { return }
                for layer in 0..<spec.layers {
                    for kind in KVKind.allCases {
                        let v = m.view(layer: layer, kind)
                        try kernels.writePattern(base: UInt64(v.address), slotStride: v.slotStride,
                                                 tokenStride: v.tokenStride, slot: slot, tokens: from..<to,
                                                 tokenElements: elements, request: request,
                                                 tensor: layer * 2 + kind.rawValue, stream: stream)
                    }
                }
            }
            for op in 0..<operations {
                let roll = Int.random(in: 0..<10, using: &rng)
                if roll < 3, m.hasFreeSlot {
                    active[try m.allocateSlot(expectedLength: 1000)] = (nextRequest, 0)
                    nextRequest += 1
                } else if roll < 8, let (slot, r) = active.randomElement(using: &rng) {
                    let newLength = min(spec.maxContext, r.length + Int.random(in: 1...1500, using: &rng))
                    do {
                        try m.step([(slot, newLength)])
                    } catch KVCacheError.outOfPages {
                        outOfPages += 1
                        if let victim = active.keys.filter({ $0 != slot }).randomElement(using: &rng) {
                            try m.free(victim)  // after its kernels were queued: the fence covers them
                            active[victim] = nil
                        }
                        continue
                    }
                    try launchWrite(slot: slot, request: r.request, from: r.length, to: newLength)
                    active[slot] = (r.request, newLength)
                } else if let (slot, _) = active.randomElement(using: &rng) {
                    try m.free(slot)
                    active[slot] = nil
                }
                let problems = m.checkInvariants()
                if !problems.isEmpty {
                    print("  FAIL \(layout) op \(op): \(problems.prefix(3))")
                    failures += 1
                    break
                }
                if op % 10 == 9 {
                    try counter.upload([UInt32(0)])
                    for (slot, r) in active where r.length > 0 {
                        for layer in 0..<spec.layers {
                            for kind in KVKind.allCases {
                                let v = m.view(layer: layer, kind)
                                try kernels.checkPattern(base: UInt64(v.address), slotStride: v.slotStride,
                                                         tokenStride: v.tokenStride, slot: slot, tokens: r.length,
                                                         tokenElements: elements, request: r.request,
                                                         tensor: layer * 2 + kind.rawValue,
                                                         mismatches: counter.address, stream: stream)
                            }
                        }
                        verified += r.length * spec.layers * 2
                    }
                    try stream.synchronize()
                    let bad = try counter.download(UInt32.self, count: 1)[0]
                    if bad != 0 {
                        print("  FAIL \(layout) op \(op): \(bad) mismatching elements")
                        failures += 1
                        break
                    }
                }
            }
            let st = m.stats
            try stream.synchronize()
            try m.shutdown()
            print("  \(layout): \(verified) token-rows verified, \(st.memory.criticalMaps) maps on the critical path, "
                  + "\(st.memory.backgroundMaps) in the background, \(st.unmaps) unmaps, \(outOfPages) out-of-pages, "
                  + "background errors \(st.backgroundErrors)")
            if st.backgroundErrors > 0 { print("  FAIL background mapper: \(st.lastBackgroundError ?? "")"); failures += 1 }
        }
        if chosen.contains("zero-page") {
            failures += try checkZeroPage(device: device, stream: stream, kernels: kernels, counter: counter)
        }
        if chosen.contains("graph") {
            var rng = SplitMix64(seed: seed ^ 0x6EA9)
            failures += try checkGraph(device: device, stream: stream, kernels: kernels, rng: &rng)
        }
        print(failures == 0 ? "PASS vattn check cuda" : "FAIL vattn check cuda (\(failures))")
        return failures == 0
    }

    /// CUDA graphs: a chain of order-sensitive kernel launches (x ← x·a + b + i, different a, b, grid per step) is
    /// captured, must not run during capture, and each replay must equal the chain computed on the host; a replay
    /// after new inputs were written must read them (graphs capture addresses, not data).
    func checkGraph(device: CUDADevice, stream: CUDAStream, kernels: CheckKernels, rng: inout SplitMix64) throws -> Int {
        let cuda = device.cuda
        let n = 1 << 20
        let x = try DeviceBuffer(cuda, byteCount: n * 4)
        let steps: [(a: UInt32, b: UInt32, grid: UInt32)] = (0..<6).map { i in
            (UInt32(truncatingIfNeeded: rng.next()) | 1, UInt32(truncatingIfNeeded: rng.next()), UInt32(1 << (3 + i)))
        }
        func host(_ start: [UInt32], replays: Int) -> [UInt32] {
            var v = start
            for _ in 0..<replays {
                for s in steps { for i in 0..<n { v[i] = v[i] &* s.a &+ s.b &+ UInt32(i) } }
            }
            return v
        }
        func mismatches(_ a: [UInt32], _ b: [UInt32]) -> Int { zip(a, b).reduce(0) { $0 + ($1.0 != $1.1 ? 1 : 0) } }
        var failures = 0
        func expect(_ ok: Bool, _ what: String) {
            if !ok { print("  FAIL graph: \(what)"); failures += 1 }
        }
        let initial = (0..<n).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        try x.upload(initial)
        try device.synchronize()  // the upload went through the legacy stream
        let exec = try stream.capture {
            for s in steps {
                try kernels.graphStep(x: x.address, n: n, a: s.a, b: s.b, grid: s.grid, stream: stream)
            }
        }
        try stream.synchronize()
        let afterCapture = try x.download(UInt32.self, count: n)
        expect(afterCapture == initial, "the captured launches ran during capture")
        let replays = 3
        for _ in 0..<replays { try exec.launch(on: stream) }
        try stream.synchronize()
        let got = try x.download(UInt32.self, count: n)
        let bad = mismatches(got, host(initial, replays: replays))
        expect(bad == 0, "\(bad) of \(n) elements differ after \(replays) replays")
        let fresh = (0..<n).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
        try x.upload(fresh)
        try device.synchronize()
        try exec.launch(on: stream)
        try stream.synchronize()
        let bad2 = mismatches(try x.download(UInt32.self, count: n), host(fresh, replays: 1))
        expect(bad2 == 0, "\(bad2) of \(n) elements differ after a replay on new inputs")
        // Replay cost: 200 replays of the 6-launch graph vs the same 6 launches issued one by one.
        let start = try CUDAEvent(cuda, timing: true), end = try CUDAEvent(cuda, timing: true)
        try start.record(on: stream)
        for _ in 0..<200 { try exec.launch(on: stream) }
        try end.record(on: stream)
        try end.synchronize()
        let graphMs = Double(try end.milliseconds(since: start)) / 200
        try start.record(on: stream)
        for _ in 0..<200 {
            for s in steps {
                try kernels.graphStep(x: x.address, n: n, a: s.a, b: s.b, grid: s.grid, stream: stream)
            }
        }
        try end.record(on: stream)
        try end.synchronize()
        let eagerMs = Double(try end.milliseconds(since: start)) / 200
        withExtendedLifetime(exec) {}
        print("  graph: \(steps.count) launches captured (none ran during capture), \(replays) replays + 1 on new "
              + "inputs, \(n) elements each: \(failures == 0 ? "match the host chain — ok" : "FAIL"); "
              + "\(fmt(graphMs * 1000, 1)) µs per replay vs \(fmt(eagerMs * 1000, 1)) µs for the same launches one by one")
        return failures
    }

    /// With the zero page on, a kernel reads zeros from never-backed parts of a tensor and from pages that were
    /// mapped, written and unmapped again, while backed pages keep their data.
    func checkZeroPage(device: CUDADevice, stream: CUDAStream, kernels: CheckKernels, counter: DeviceBuffer) throws -> Int {
        let backend = try CUDAMemoryBackend(device: device, stream: stream, zeroPage: true)
        let spec = KVCacheSpec(layers: 2, kvHeads: 8, headDim: 128, dtype: .bf16, maxSlots: 4, maxContext: 4096,
                               pageSize: 2 << 20, layout: .perLayer)
        let m = try KVCacheManager(spec: spec, backend: backend, memoryBudget: 16 * spec.pageSize,
                                   policy: MapAheadPolicy(background: false))
        func nonzero(_ v: KVTensorView, slot: Int, tokens: Int) throws -> UInt32 {
            try counter.upload([UInt32(0)])
            try kernels.countNonzero(base: UInt64(v.byteAddress(slot: slot, token: 0)),
                                     count: tokens * spec.kvHeads * spec.headDim, into: counter.address, stream: stream)
            try stream.synchronize()
            return try counter.download(UInt32.self, count: 1)[0]
        }
        var failures = 0
        let v = m.view(layer: 1, .value)
        // 1. Nothing mapped yet: the whole of slot 2 reads as zeros.
        let unbacked = try nonzero(v, slot: 2, tokens: spec.maxContext)
        // 2. Back slot 0 with 2 pages per tensor, write every token, check the data is there.
        let s = try m.allocateSlot()
        try m.step([(s, 2048)])
        try kernels.writePattern(base: UInt64(v.address), slotStride: v.slotStride, tokenStride: v.tokenStride, slot: s,
                                 tokens: 0..<2048, tokenElements: spec.kvHeads * spec.headDim, request: 77, tensor: 3,
                                 stream: stream)
        try stream.synchronize()
        let written = try nonzero(v, slot: s, tokens: 2048)
        // 3. Free and reclaim every page: the range reads as zeros again.
        try m.free(s)
        _ = try m.reclaim(pages: 1 << 20)
        let afterUnmap = try nonzero(v, slot: s, tokens: 2048)
        try m.shutdown()
        let ok = unbacked == 0 && written > UInt32(2048 * spec.kvHeads * spec.headDim / 2) && afterUnmap == 0
        print("  zero page: unbacked slot non-zero elements \(unbacked), written slot \(written) of "
              + "\(2048 * spec.kvHeads * spec.headDim) non-zero, after unmap \(afterUnmap) — \(ok ? "ok" : "FAIL")")
        if !ok { failures += 1 }
        return failures
    }
}
