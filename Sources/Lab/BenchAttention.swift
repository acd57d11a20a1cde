import CUDADriver
import CUDAKernels
import Randomness
import Support
import VAttention

/// `vattn bench attention`: GPU decode attention, bf16, 32 query / 8 KV heads, d=128 — µs per call, GB/s, fraction
/// of copy bandwidth; contiguous (KVCacheManager, both layouts) vs paged (16, 256). Writes `Result` as JSON.
public struct AttentionBench {
    /// Shapes as batch x context, comma separated.
    public var shapes = "1x32768,16x8192,64x4096,128x2048,256x1024"
    /// Calls per timed group.
    public var callsPerGroup = 10
    /// Timed groups (median reported).
    public var groups = 30
    /// Calls captured per CUDA graph for the graph timing (0: no graph timing).
    public var graphCalls = 20
    /// Split-KV merges to measure, comma separated: auto, block, separate.
    public var merge = "auto"
    /// Override the split size (tokens, multiple of 32).
    public var chunk: Int?
    /// Pipeline depths of the split kernel to measure (comma separated, 2…8).
    public var stages = "3"
    /// Storages to run: contiguous-perLayer, contiguous-mega, paged-16, paged-256 (comma separated).
    public var storages = "contiguous-perLayer,contiguous-mega,paged-16,paged-256"
    /// Where to write the JSON result.
    public var json: String?
    /// Random seed.
    public var seed: UInt64 = 42

    public init() {}

    /// What the JSON file holds.
    public struct Result: Codable, Sendable {
        public struct Row: Codable, Sendable {
            public let batch: Int
            public let context: Int
            public let storage: String
            public let chunk: Int
            public let stages: Int
            public let merge: String
            public let microsMedian: Rounded
            public let microsP10P90Spread: Rounded
            public let GBps: Rounded
            public let fractionOfCopy: Rounded
            public let graphCalls: Int
            public let graphMicrosMedian: Rounded
            public let graphMicrosP10P90Spread: Rounded
            public let graphFractionOfCopy: Rounded
        }
        public let device: String
        public let copyGBps: Rounded
        public let dtype: String
        public let qHeads: Int
        public let kvHeads: Int
        public let headDim: Int
        public let callsPerGroup: Int
        public let groups: Int
        public let results: [Row]
    }

    public func run() throws {
        let handle = try BackendHandle.make(.cuda)
        let device = handle.device!, stream = handle.stream!, cuda = device.cuda
        let nvrtc = try NVRTC()
        let kernels = try DecodeAttentionKernels(device: device, compiler: nvrtc)
        var rng = SplitMix64(seed: seed)
        let qHeads = 32, kvHeads = 8, d = 128, dtype = KVElementType.bf16
        let chosen = KVStorage.all.filter { storages.split(separator: ",").map(String.init).contains($0.description) }
        print("vattn bench attention — \(handle.description), \(kernels.limits.multiprocessors) SMs")

        // Copy ceiling: 1 GiB → 1 GiB, median of 20.
        let copyBytes = 1 << 30
        let src = try DeviceBuffer(cuda, byteCount: copyBytes), dst = try DeviceBuffer(cuda, byteCount: copyBytes)
        try cuda.check(cuda.api.memsetD8(src.address, 0x3C, copyBytes), "cuMemsetD8")
        let copyMs = try timeMedian(stream: stream, calls: 1, groups: 20) {
            try kernels.copy(from: src.address, to: dst.address, bytes: copyBytes, stream: stream)
        }
        let copyGBps = Double(2 * copyBytes) / (copyMs * 1e-3) / 1e9
        print("copy ceiling: \(fmt(copyGBps, 0)) GB/s (1 GiB copy kernel, read + write counted, median of 20)")

        // Random K/V rows (16K tokens) cycled through to fill every position.
        let sourceTokens = 16384
        let rowElements = kvHeads * d
        let sourceK = try DeviceBuffer(cuda, byteCount: sourceTokens * rowElements * 2)
        let sourceV = try DeviceBuffer(cuda, byteCount: sourceTokens * rowElements * 2)
        try sourceK.upload(randomHalfs(sourceTokens * rowElements, dtype: dtype, amplitude: 1, rng: &rng).bits)
        try sourceV.upload(randomHalfs(sourceTokens * rowElements, dtype: dtype, amplitude: 1, rng: &rng).bits)

        struct Row { var batch: Int; var context: Int; var storage: String; var merge: String
                     var chunk: Int; var micros: Double
                     var spread: Double; var gbps: Double; var fraction: Double; var stages: Int
                     var graphMicros: Double?; var graphSpread: Double? }
        var rows: [Row] = []
        for spec in shapes.split(separator: ",") {
            let parts = spec.split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2 else { throw LabError("bad shape \(spec)") }
            let (batch, context) = (parts[0], parts[1])
            let stageList = stages.split(separator: ",").compactMap { Int($0) }
            let mergeModes = try merge.split(separator: ",").map { m -> DecodeMerge? in
                if m == "auto" { return nil }
                guard let mode = DecodeMerge(rawValue: String(m)) else {
                    throw LabError("--merge takes auto, block, separate (comma separated)")
                }
                return mode
            }
            // (shape, label suffix) per stage count and merge mode.
            let shapes = stageList.flatMap { st -> [(DecodeShape, String)] in
                let auto = DecodeShape(batch: batch, qHeads: qHeads, kvHeads: kvHeads, headDim: d, dtype: dtype,
                                       maxLength: context, chunk: chunk, stages: st,
                                       limits: kernels.limits)
                var launches: Set<String> = []  // one run per distinct launch
                return mergeModes.compactMap { mode in
                    var s = auto
                    if let mode { s.merge = mode }
                    if s.merge == .block && s.maxSplits > 1 && !s.splitsFitOneBlock { return nil }
                    guard launches.insert(s.mergeName).inserted else { return nil }
                    return (s, mode != nil && s.maxSplits > 1 ? " \(s.merge)" : "")
                }
            }
            let q = try DeviceBuffer(cuda, byteCount: batch * qHeads * d * 2)
            try q.upload(randomHalfs(batch * qHeads * d, dtype: dtype, amplitude: 2, rng: &rng).bits)
            let out = try DeviceBuffer(cuda, byteCount: batch * qHeads * d * 2)
            let workspaces = try shapes.map { try DecodeWorkspace(cuda, shape: $0.0) }
            let bytes = Double(2 * batch * context * rowElements * 2)
            for storage in chosen {
                let kv = try DecodeKV(storage: storage, layers: 2, kvHeads: kvHeads, headDim: d, dtype: dtype,
                                      lengths: [Int](repeating: context, count: batch), maxLength: context,
                                      handle: handle, kernels: kernels, sourceK: sourceK, sourceV: sourceV,
                                      sourceTokens: sourceTokens, rng: &rng)
                for ((shape, mergeLabel), workspace) in zip(shapes, workspaces) {
                var layer = 0
                let scale = 1 / Float(d).squareRoot()
                let call: () throws -> Void = {
                    try kv.decode(kernels, layer: layer, query: q.address, output: out.address, shape: shape,
                                  workspace: workspace, scale: scale, stream: stream)
                    layer ^= 1
                }
                for _ in 0..<5 { try call() }
                var samples: [Double] = []
                let ms = try timeMedian(stream: stream, calls: callsPerGroup, groups: groups, samples: &samples, call)
                let micros = ms * 1000
                let s = samples.sorted()
                let spread = (s[s.count * 9 / 10] - s[s.count / 10]) * 1000
                let gbps = bytes / (micros * 1e-6) / 1e9
                // Make sure the output is finite (a broken kernel must not post a number).
                let o = try out.download(UInt16.self, count: batch * qHeads * d)
                if o.contains(where: { halfToFloat($0, dtype).isNaN }) {
                    throw LabError("NaN in the output of \(storage) \(batch)x\(context)")
                }
                let label = (stageList.count > 1 ? "\(storage) s\(shape.stages)" : storage.description) + mergeLabel
                // The same calls inside a replayed CUDA graph (no launch gaps), output checked bit for bit.
                var graphMicros: Double?, graphSpread: Double?
                if graphCalls > 0 {
                    try stream.synchronize()
                    let exec = try stream.capture { for _ in 0..<graphCalls { try call() } }
                    try cuda.check(cuda.api.memsetD8(out.address, 0xFF, batch * qHeads * d * 2), "cuMemsetD8")
                    try device.synchronize()
                    try exec.launch(on: stream)
                    try stream.synchronize()
                    let g = try out.download(UInt16.self, count: batch * qHeads * d)
                    if g != o {
                        let bad = zip(g, o).filter { $0 != $1 }.count
                        throw LabError("graph replay output differs from the plain launches' in \(bad) "
                                                  + "elements (\(storage) \(batch)x\(context))")
                    }
                    var gs: [Double] = []
                    let gms = try timeMedian(stream: stream, calls: 1, groups: groups, samples: &gs) {
                        try exec.launch(on: stream)
                    }
                    graphMicros = gms * 1000 / Double(graphCalls)
                    let gsorted = gs.sorted()
                    graphSpread = (gsorted[gsorted.count * 9 / 10] - gsorted[gsorted.count / 10]) * 1000
                        / Double(graphCalls)
                }
                rows.append(Row(batch: batch, context: context, storage: label,
                                merge: shape.mergeName, chunk: shape.chunk,
                                micros: micros, spread: spread, gbps: gbps, fraction: gbps / copyGBps,
                                stages: shape.stages, graphMicros: graphMicros, graphSpread: graphSpread))
                let graphText = graphMicros.map {
                    "; graph \(fmt($0, 1)) µs (spread \(fmt(graphSpread ?? 0, 1))), \(fmt(bytes / ($0 * 1e-6) / 1e9, 0)) GB/s, "
                        + "\(fmt(bytes / ($0 * 1e-6) / 1e9 / copyGBps, 3)) of copy"
                } ?? ""
                print("  \(batch)×\(context) \(pad(label, 30)) chunk \(shape.chunk) merge "
                      + "\(shape.mergeName): "
                      + "\(fmt(micros, 1)) µs (p10–p90 spread \(fmt(spread, 1))), \(fmt(gbps, 0)) GB/s, "
                      + "\(fmt(gbps / copyGBps, 3)) of copy" + graphText)
                }
                try kv.close(stream: stream)
            }
        }

        // Table: µs / fraction of copy, one column per shape.
        let shapeKeys = rows.reduce(into: [(Int, Int)]()) { acc, r in
            if !acc.contains(where: { $0 == (r.batch, r.context) }) { acc.append((r.batch, r.context)) }
        }
        let anchors = PeerAnchors.forDevice(handle.description)
        let peers = anchors?.decodeMicros ?? [:]
        print("\nDecode, bf16, 32/8 heads, d=128: µs / fraction of copy (\(fmt(copyGBps, 0)) GB/s)")
        print("| kernel | " + shapeKeys.map { "\($0.0)×\($0.1 / 1024)K" }.joined(separator: " | ") + " |")
        print("|---|" + shapeKeys.map { _ in "---|" }.joined())
        let labels = rows.reduce(into: [String]()) { acc, r in if !acc.contains(r.storage) { acc.append(r.storage) } }
        for storage in labels {
            let cells = shapeKeys.map { key -> String in
                guard let r = rows.first(where: { $0.storage == storage && ($0.batch, $0.context) == key }) else { return "–" }
                return "\(fmt(r.micros, 1)) / \(fmt(r.fraction, 2))"
            }
            print("| ours \(storage) | " + cells.joined(separator: " | ") + " |")
            if rows.contains(where: { $0.storage == storage && $0.graphMicros != nil }) {
                let gcells = shapeKeys.map { key -> String in
                    guard let r = rows.first(where: { $0.storage == storage && ($0.batch, $0.context) == key }),
                          let g = r.graphMicros else { return "–" }
                    return "\(fmt(g, 1)) / \(fmt(r.fraction * r.micros / g, 2))"
                }
                print("| ours \(storage), CUDA graph | " + gcells.joined(separator: " | ") + " |")
            }
        }
        let best = shapeKeys.map { key -> String in
            guard let peer = peers["\(key.0)x\(key.1)"] else { return "–" }
            return "\(fmt(peer, 1))"
        }
        print("| best peer (cuDNN; \(anchors?.source ?? "no figures for this GPU")) | " + best.joined(separator: " | ") + " |")
        let speedups = shapeKeys.map { key -> String in
            guard let peer = peers["\(key.0)x\(key.1)"],
                  let r = rows.filter({ ($0.batch, $0.context) == key && $0.storage.hasPrefix("contiguous") })
                      .min(by: { $0.micros < $1.micros }) else { return "–" }
            return "\(fmt(peer / min(r.micros, r.graphMicros ?? .infinity), 2))×"
        }
        print("| best ours contiguous vs peer (>1 = faster) | " + speedups.joined(separator: " | ") + " |")

        if let path = json {
            try writeJSON(Result(
                device: handle.description, copyGBps: Rounded(copyGBps, 1), dtype: "bf16", qHeads: qHeads,
                kvHeads: kvHeads, headDim: d, callsPerGroup: callsPerGroup, groups: groups,
                results: rows.map { r in
                    Result.Row(batch: r.batch, context: r.context, storage: r.storage, chunk: r.chunk,
                               stages: r.stages, merge: r.merge, microsMedian: Rounded(r.micros, 2),
                               microsP10P90Spread: Rounded(r.spread, 2), GBps: Rounded(r.gbps, 1),
                               fractionOfCopy: Rounded(r.fraction, 4), graphCalls: graphCalls,
                               graphMicrosMedian: r.graphMicros.map { Rounded($0, 2) }.orNull,
                               graphMicrosP10P90Spread: r.graphSpread.map { Rounded($0, 2) }.orNull,
                               graphFractionOfCopy: r.graphMicros.map { Rounded(r.fraction * r.micros / $0, 4) }.orNull)
                }), to: path)
            print("wrote \(path)")
        }
    }
}

/// Median over `groups` of (event-timed group of `calls` back-to-back calls) / calls, in ms.
func timeMedian(stream: CUDAStream, calls: Int, groups: Int, _ body: () throws -> Void) throws -> Double {
    var samples: [Double] = []
    return try timeMedian(stream: stream, calls: calls, groups: groups, samples: &samples, body)
}

func timeMedian(stream: CUDAStream, calls: Int, groups: Int, samples: inout [Double],
                _ body: () throws -> Void) throws -> Double {
    let cuda = stream.cuda
    let start = try CUDAEvent(cuda, timing: true), end = try CUDAEvent(cuda, timing: true)
    try body()  // warm-up
    samples = []
    for _ in 0..<groups {
        try start.record(on: stream)
        for _ in 0..<calls { try body() }
        try end.record(on: stream)
        try end.synchronize()
        samples.append(Double(try end.milliseconds(since: start)) / Double(calls))
    }
    let s = samples.sorted()
    return s[s.count / 2]
}
