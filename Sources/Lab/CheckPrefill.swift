import CUDADriver
import CUDAKernels
import Kernels
import Randomness
import Support
import VAttention

/// Shared by `check prefill` and `bench prefill`: element conversions and KV placement on the device.
enum PrefillSupport {
    static let nanBits: UInt16 = 0xFFFF  // NaN in both bf16 and fp16

    static func bits(_ x: Float, _ t: KVElementType) -> UInt16 {
        t == .bf16 ? bf16Bits(x) : Float16(x).bitPattern
    }

    static func float(_ b: UInt16, _ t: KVElementType) -> Float {
        t == .bf16 ? floatFromBF16(b) : Float(Float16(bitPattern: b))
    }


    static func copyToDevice(_ cuda: CUDA, _ dst: UInt64, _ src: UnsafeRawPointer, _ bytes: Int) throws {
        try cuda.check(cuda.api.memcpyHtoD(dst, src, bytes), "cuMemcpyHtoD")
    }

    /// Writes `rows` (token-major `[tokens, kvHeads·headDim]` bits) into tokens `from..<from+tokens` of `slot` of a
    /// manager's K or V view. One copy when the slot's tokens are dense (per-layer layout), else one per token.
    static func writeTokens(_ cuda: CUDA, view: KVTensorView, slot: Int, from: Int, rows: [UInt16], rowElements: Int)
        throws
    {
        let tokens = rows.count / rowElements
        try rows.withUnsafeBytes { raw in
            if view.tokenStride == rowElements {
                try copyToDevice(cuda, UInt64(view.byteAddress(slot: slot, token: from)), raw.baseAddress!, raw.count)
            } else {
                for t in 0..<tokens {
                    try copyToDevice(cuda, UInt64(view.byteAddress(slot: slot, token: from + t)),
                                     raw.baseAddress! + t * rowElements * 2, rowElements * 2)
                }
            }
        }
    }

    /// A vLLM-style paged pool for one sequence of `tokens` tokens: blocks in a shuffled order among twice as many as
    /// needed; unused blocks hold NaN so a wrong block id cannot go unnoticed.
    struct PagedPool {
        let keys: DeviceBuffer
        let values: DeviceBuffer
        let table: DeviceBuffer
        let blockSize: Int
        let numBlocks: Int

        init(_ cuda: CUDA, keyRows: [UInt16], valueRows: [UInt16], rowElements: Int, blockSize: Int,
             rng: inout SplitMix64) throws {
            let tokens = keyRows.count / rowElements
            let used = (tokens + blockSize - 1) / blockSize
            numBlocks = max(2 * used, 1)
            var ids = Array(0..<Int32(numBlocks))
            ids.shuffle(using: &rng)
            let tableIds = Array(ids.prefix(used))
            self.blockSize = blockSize
            let bytes = numBlocks * blockSize * rowElements * 2
            keys = try DeviceBuffer(cuda, byteCount: bytes)
            values = try DeviceBuffer(cuda, byteCount: bytes)
            table = try DeviceBuffer(cuda, byteCount: max(used, 1) * 4)
            try table.upload(tableIds)
            for (buffer, rows) in [(keys, keyRows), (values, valueRows)] {
                var pool = [UInt16](repeating: PrefillSupport.nanBits, count: numBlocks * blockSize * rowElements)
                for t in 0..<tokens {
                    let dst = (Int(tableIds[t / blockSize]) * blockSize + t % blockSize) * rowElements
                    for e in 0..<rowElements { pool[dst + e] = rows[t * rowElements + e] }
                }
                try buffer.upload(pool)
            }
        }
    }
}

/// `vattn check prefill`: on a GPU, causal/chunked prefill attention kernels (K/V in a real KVCacheManager, both
/// layouts, and the paged twins) against the CPU reference, on fresh random inputs with NaN-poisoned outputs.
public struct PrefillCheck {
    /// Random seed (default: from the clock).
    public var seed: UInt64?

    public init() {}

    /// Prints each case and a PASS/FAIL line; false when a case failed.
    public func run() throws -> Bool {
        let handle = try BackendHandle.make(.cuda)
        let device = handle.device!, stream = handle.stream!
        let cuda = device.cuda
        let nvrtc = try NVRTC()
        let compileStart = monotonicNanos()
        let kernels = try PrefillAttentionKernels(device: device, compiler: nvrtc)
        let seed = self.seed ?? monotonicNanos()
        print("vattn check prefill — \(handle.description), NVRTC \(nvrtc.version.major).\(nvrtc.version.minor), "
              + "seed \(seed), kernels ready in \(fmt(Double(monotonicNanos() - compileStart) / 1e9, 2)) s")
        var rng = SplitMix64(seed: seed)
        let kvHeads = 2
        // (chunk length, offset): single token, tile multiples ± odd, chunks behind a prefix.
        let lengths: [(n: Int, offset: Int)] = [(1, 0), (1, 137), (93, 0), (128, 0), (250, 333), (64, 700)]
        var passed = 0, failed = 0
        var worst: [String: Double] = [:]
        for dtype in KVElementType.cudaAttentionTypes {
            let tolerance = dtype == .bf16 ? 1e-2 : 5e-3
            for d in PrefillAttentionKernels.headDims {
                // One manager per layout for this (dtype, d): 2 layers (we use layer 1, so the mega layer offset
                // counts), 2 slots (we use whichever the manager hands out).
                var managers: [(KVCacheSpec.Layout, KVCacheManager, Int)] = []
                for layout in KVCacheSpec.Layout.allCases {
                    let spec = KVCacheSpec(layers: 2, kvHeads: kvHeads, headDim: d, dtype: dtype,
                                           maxSlots: 2, maxContext: 1024, pageSize: 2 << 20, layout: layout)
                    let budget = spec.tensorCount * spec.maxPagesPerTensor * spec.maxSlots * spec.pageSize
                    let m = try KVCacheManager(spec: spec, backend: handle.backend, memoryBudget: budget,
                                               policy: MapAheadPolicy(background: true, lookAheadTokens: 64))
                    let slot = try m.allocateSlot(expectedLength: 1024)
                    try m.step([(slot, 1024)])
                    managers.append((layout, m, slot))
                }
                for group in [1, 4, 8] {
                    let qHeads = kvHeads * group
                    let shape = AttentionShape(qHeads: qHeads, kvHeads: kvHeads, headDim: d)
                    let scale = 1 / Float(d).squareRoot()
                    let rowElements = kvHeads * d
                    for (n, offset) in lengths {
                        let total = n + offset
                        // Fresh inputs, rounded to the storage type (what the kernel reads).
                        func draw(_ count: Int, _ amplitude: Float) -> [UInt16] {
                            (0..<count).map { _ in PrefillSupport.bits(rng.nextSignedUnitFloat() * amplitude, dtype) }
                        }
                        let qBits = draw(n * qHeads * d, 2), kBits = draw(total * rowElements, 2)
                        let vBits = draw(total * rowElements, 1)
                        let qFloat = qBits.map { PrefillSupport.float($0, dtype) }
                        var reference = [Float](repeating: 0, count: n * qHeads * d)
                        var kHost = kBits, vHost = vBits
                        kHost.withUnsafeMutableBytes { kRaw in
                            vHost.withUnsafeMutableBytes { vRaw in
                                let et = dtype
                                let ks = KVTensorView.perLayer(address: UInt(bitPattern: kRaw.baseAddress!), dtype: et, maxContext: total,
                                                            kvHeads: kvHeads, headDim: d)
                                let vs = KVTensorView.perLayer(address: UInt(bitPattern: vRaw.baseAddress!), dtype: et, maxContext: total,
                                                            kvHeads: kvHeads, headDim: d)
                                qFloat.withUnsafeBufferPointer { q in
                                    reference.withUnsafeMutableBufferPointer { out in
                                        prefillAttention(query: q.baseAddress!, chunkLength: n, offset: offset,
                                                         keys: ks, values: vs, slot: 0, shape: shape, scale: scale,
                                                         output: out.baseAddress!)
                                    }
                                }
                            }
                        }
                        let query = try DeviceBuffer(cuda, byteCount: qBits.count * 2)
                        try query.upload(qBits)
                        let output = try DeviceBuffer(cuda, byteCount: qBits.count * 2)

                        func verify(_ label: String, _ kv: PrefillKV, config: PrefillConfig) throws {
                            try cuda.check(cuda.api.memsetD8(output.address, 0xFF, output.byteCount), "cuMemsetD8")
                            // Uploads and the poison go through the legacy stream, which our non-blocking stream does
                            // not wait for: finish them first.
                            try device.synchronize()
                            try kernels.launch(query: query.address, output: output.address, kv: kv, chunkLength: n,
                                               offset: offset, qHeads: qHeads, kvHeads: kvHeads, headDim: d,
                                               dtype: dtype, scale: scale, config: config, stream: stream)
                            try stream.synchronize()
                            let got = try output.download(UInt16.self, count: qBits.count)
                            var num = 0.0, den = 0.0, nans = 0
                            for i in 0..<got.count {
                                let g = Double(PrefillSupport.float(got[i], dtype)), r = Double(reference[i])
                                if g.isNaN || g.isInfinite { nans += 1; continue }
                                num += (g - r) * (g - r)
                                den += r * r
                            }
                            let rel = den > 0 ? (num / den).squareRoot() : num.squareRoot()
                            let ok = nans == 0 && rel <= tolerance
                            let name = "\(dtype.rawValue) d\(d) g\(group) n\(n) off\(offset) \(label) \(config)"
                            print("  \(ok ? "PASS" : "FAIL") \(pad(name, 50)) rel err \(fmt(rel, 6))"
                                  + (nans > 0 ? "  \(nans) NaN/unwritten" : ""))
                            if ok { passed += 1 } else { failed += 1 }
                            let key = "\(dtype.rawValue) \(label)"
                            worst[key] = max(worst[key] ?? 0, nans > 0 ? .infinity : rel)
                        }

                        let configs = kernels.configs(dtype: dtype, headDim: d)
                        for (layout, m, slot) in managers {
                            // The slot is backed to maxContext; NaN past the chunk: reading beyond kvLen must not leak.
                            let nanRows = [UInt16](repeating: PrefillSupport.nanBits, count: 64 * rowElements)
                            let kView = m.view(layer: 1, .key), vView = m.view(layer: 1, .value)
                            try PrefillSupport.writeTokens(cuda, view: kView, slot: slot, from: 0, rows: kBits,
                                                           rowElements: rowElements)
                            try PrefillSupport.writeTokens(cuda, view: vView, slot: slot, from: 0, rows: vBits,
                                                           rowElements: rowElements)
                            for view in [kView, vView] {
                                try PrefillSupport.writeTokens(cuda, view: view, slot: slot, from: total, rows: nanRows,
                                                               rowElements: rowElements)
                            }
                            let kv = PrefillKV.contiguous(
                                keys: UInt64(kView.byteAddress(slot: slot, token: 0)),
                                values: UInt64(vView.byteAddress(slot: slot, token: 0)),
                                tokenStride: kView.tokenStride, headStride: kView.headStride)
                            for c in configs { try verify(layout.rawValue, kv, config: c) }
                        }
                        for blockSize in [16, 256] {
                            let pool = try PrefillSupport.PagedPool(cuda, keyRows: kBits, valueRows: vBits,
                                                                    rowElements: rowElements, blockSize: blockSize,
                                                                    rng: &rng)
                            let kv = PrefillKV.paged(keys: pool.keys.address, values: pool.values.address,
                                                     table: pool.table.address, blockSize: blockSize)
                            for c in configs { try verify("paged\(blockSize)", kv, config: c) }
                        }
                    }
                }
                for (_, m, _) in managers {
                    try stream.synchronize()
                    try m.shutdown()
                }
            }
        }
        print("worst relative error per dtype × storage:")
        for (k, v) in worst.sorted(by: { $0.key < $1.key }) { print("  \(pad(k, 18)) \(fmt(v, 6))") }
        print(failed == 0 ? "PASS vattn check prefill (\(passed) cases)"
                          : "FAIL vattn check prefill (\(failed) of \(passed + failed) cases)")
        return failed == 0
    }
}
