import CUDADriver
import CUDAKernels
import Randomness
import Support
import VAttention

/// `vattn bench prefill`: on a GPU, causal prefill attention (single sequence 2K/8K/32K and a 2K chunk at offset 30K),
/// bf16, 32 query / 8 KV heads, d=128; ours on the KVCacheManager (per-layer and mega layout) vs paged 16/256.
/// Writes `Result` as JSON.
public struct PrefillBench {
    /// Timed launches per case and kernel.
    public var iterations = 20
    /// Warm-up launches per case and kernel.
    public var warmup = 3
    /// Layers of the KVCacheManager spec (the mega layout's token stride is layers × 2 KB).
    public var layers = 32
    /// Write the results as JSON here.
    public var json: String?
    /// Random seed (default: from the clock).
    public var seed: UInt64?

    public init() {}

    struct Row {
        let caseName: String
        let n: Int
        let offset: Int
        let kernel: String
        let config: PrefillConfig
        let us: Double
        let tflops: Double
        let flops: Double
    }

    /// What the JSON file holds.
    public struct Result: Codable, Sendable {
        public struct Shape: Codable, Sendable {
            public let qHeads: Int
            public let kvHeads: Int
            public let headDim: Int
            public let dtype: String
        }
        public struct Row: Codable, Sendable {
            public let `case`: String
            public let n: Int
            public let offset: Int
            public let kernel: String
            public let config: String
            public let median_us: Rounded
            public let tflops: Rounded
            public let flops: Double
        }
        public let device: String
        public let seed: UInt64
        public let iterations: Int
        public let warmup: Int
        public let layers: Int
        public let shape: Shape
        /// How the FLOPs are counted.
        public let flops: String
        public let results: [Row]
    }

    public func run() throws {
        let handle = try BackendHandle.make(.cuda)
        let device = handle.device!, stream = handle.stream!
        let cuda = device.cuda
        let nvrtc = try NVRTC()
        let kernels = try PrefillAttentionKernels(device: device, compiler: nvrtc)
        let seed = self.seed ?? monotonicNanos()
        var rng = SplitMix64(seed: seed)
        let qHeads = 32, kvHeads = 8, d = 128, dtype = KVElementType.bf16
        let maxContext = 32768, rowElements = kvHeads * d
        let scale = 1 / Float(d).squareRoot()
        print("vattn bench prefill — \(handle.description), seed \(seed), \(iterations) timed launches (median), "
              + "bf16, \(qHeads) q / \(kvHeads) kv heads, d=\(d), KV spec \(layers) layers")

        func randomBits(_ count: Int, amplitude: Float) -> [UInt16] {
            var out = [UInt16](repeating: 0, count: count)
            var i = 0
            while i < count {
                var r = rng.next()
                for _ in 0..<4 where i < count {
                    let u = Float(r & 0xFFFF) / 32768 - 1
                    out[i] = PrefillSupport.bits(u * amplitude, dtype)
                    r >>= 16
                    i += 1
                }
            }
            return out
        }
        let kBits = randomBits(maxContext * rowElements, amplitude: 2)
        let vBits = randomBits(maxContext * rowElements, amplitude: 1)
        let qBits = randomBits(maxContext * qHeads * d, amplitude: 2)
        let query = try DeviceBuffer(cuda, byteCount: qBits.count * 2)
        try query.upload(qBits)
        let output = try DeviceBuffer(cuda, byteCount: qBits.count * 2)
        try device.synchronize()

        let cases: [(name: String, n: Int, offset: Int)] = [
            ("causal 2K", 2048, 0), ("causal 8K", 8192, 0), ("causal 32K", 32768, 0), ("chunk 2K @30K", 2048, 30720),
        ]
        func flops(_ n: Int, _ offset: Int) -> Double {
            if offset == 0 { return 4 * Double(n) * Double(n) * Double(qHeads * d) / 2 }
            return 4 * Double(qHeads * d) * (Double(n) * Double(offset) + Double(n) * Double(n + 1) / 2)
        }
        let start = try CUDAEvent(cuda, timing: true), end = try CUDAEvent(cuda, timing: true)
        var rows: [Row] = []
        func time(_ label: String, _ kv: PrefillKV) throws {
            for (name, n, offset) in cases {
                // The chunk's queries are the last n positions: use the tail of the query buffer.
                let q = query.address + UInt64((maxContext - n) * qHeads * d * 2)
                for config in kernels.configs(dtype: dtype, headDim: d) {
                    func launch() throws {
                        try kernels.launch(query: q, output: output.address, kv: kv, chunkLength: n, offset: offset,
                                           qHeads: qHeads, kvHeads: kvHeads, headDim: d, dtype: dtype, scale: scale,
                                           config: config, stream: stream)
                    }
                    for _ in 0..<warmup { try launch() }
                    var samples: [Double] = []
                    for _ in 0..<iterations {
                        try start.record(on: stream)
                        try launch()
                        try end.record(on: stream)
                        try end.synchronize()
                        samples.append(Double(try end.milliseconds(since: start)) * 1000)
                    }
                    let us = Summary(samples).p50
                    let f = flops(n, offset)
                    rows.append(Row(caseName: name, n: n, offset: offset, kernel: label, config: config, us: us,
                                    tflops: f / (us * 1e-6) / 1e12, flops: f))
                    print("  \(pad(name, 14)) \(pad(label, 16)) \(pad(config.description, 9))\(lpad(fmt(us, 1), 9)) µs  "
                          + "\(lpad(fmt(rows.last!.tflops, 1), 6)) TFLOP/s")
                }
            }
        }

        for layout in KVCacheSpec.Layout.allCases {
            let spec = KVCacheSpec(layers: layers, kvHeads: kvHeads, headDim: d, dtype: .bf16, maxSlots: 1,
                                   maxContext: maxContext, pageSize: 2 << 20, layout: layout)
            let m = try KVCacheManager(spec: spec, backend: handle.backend, memoryBudget: spec.reservedBytes,
                                       policy: MapAheadPolicy(background: false, lookAheadTokens: 0))
            let slot = try m.allocateSlot(expectedLength: maxContext)
            try m.step([(slot, maxContext)])
            let layer = min(1, layers - 1)
            let kView = m.view(layer: layer, .key), vView = m.view(layer: layer, .value)
            try PrefillSupport.writeTokens(cuda, view: kView, slot: slot, from: 0, rows: kBits, rowElements: rowElements)
            try PrefillSupport.writeTokens(cuda, view: vView, slot: slot, from: 0, rows: vBits, rowElements: rowElements)
            try device.synchronize()  // the uploads went through the legacy stream
            try time("vattn \(layout.rawValue)", .contiguous(
                keys: UInt64(kView.byteAddress(slot: slot, token: 0)), values: UInt64(vView.byteAddress(slot: slot, token: 0)),
                tokenStride: kView.tokenStride, headStride: kView.headStride))
            try stream.synchronize()
            try m.shutdown()
        }
        for blockSize in [16, 256] {
            let pool = try PrefillSupport.PagedPool(cuda, keyRows: kBits, valueRows: vBits, rowElements: rowElements,
                                                    blockSize: blockSize, rng: &rng)
            try device.synchronize()
            try time("paged \(blockSize)", .paged(keys: pool.keys.address, values: pool.values.address,
                                                  table: pool.table.address, blockSize: blockSize))
            try stream.synchronize()
        }

        // Table: best warp count per kernel; the peers' figures for this GPU (same shapes), if there are any.
        let kernelsOrder = ["vattn perLayer", "vattn mega", "paged 16", "paged 256"]
        let anchors = PeerAnchors.forDevice(handle.description)
        let targets = anchors?.prefill ?? [:]
        print("")
        print("| case | " + kernelsOrder.joined(separator: " | ") + " | paged16 / perLayer | peers TFLOP/s |")
        print("|---|" + String(repeating: "---|", count: kernelsOrder.count + 2))
        for c in cases {
            var cells: [String] = []
            var best: [String: Row] = [:]
            for k in kernelsOrder {
                if let r = rows.filter({ $0.caseName == c.name && $0.kernel == k }).min(by: { $0.us < $1.us }) {
                    best[k] = r
                    cells.append("\(fmt(r.us, 1)) µs / \(fmt(r.tflops, 1)) (\(r.config))")
                } else { cells.append("–") }
            }
            let ratio = (best["paged 16"]?.us ?? .nan) / (best["vattn perLayer"]?.us ?? .nan)
            print("| \(c.name) | " + cells.joined(separator: " | ") + " | \(fmt(ratio, 3))× | \(targets[c.name] ?? "") |")
        }

        if let json {
            try writeJSON(Result(
                device: handle.description, seed: seed, iterations: iterations, warmup: warmup, layers: layers,
                shape: .init(qHeads: qHeads, kvHeads: kvHeads, headDim: d, dtype: "bf16"),
                flops: "causal 4*L^2*H*D/2; chunk of n at offset o: 4*H*D*(n*o + n*(n+1)/2)",
                results: rows.map { r in
                    Result.Row(case: r.caseName, n: r.n, offset: r.offset, kernel: r.kernel, config: "\(r.config)",
                               median_us: Rounded(r.us, 2), tflops: Rounded(r.tflops, 2), flops: r.flops)
                }), to: json)
            print("wrote \(json)")
        }
    }
}
