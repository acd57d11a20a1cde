import CUDADriver
import CUDAKernels
import Kernels
import Randomness
import Support
import VAttention

/// `vattn check attention`: on a GPU, decode attention kernels (contiguous through a KVCacheManager, both layouts,
/// and paged 16/256) and the KV append kernels against the CPU reference, bf16 and fp16, d 64/128, GQA 1/3/4/8.
public struct AttentionCheck {
    /// Random seed (default: from the clock).
    public var seed: UInt64?

    public init() {}

    /// Prints each case and a PASS/FAIL line; false when a case failed.
    public func run() throws -> Bool {
        let handle = try BackendHandle.make(.cuda)
        let device = handle.device!, stream = handle.stream!, cuda = device.cuda
        let nvrtc = try NVRTC()
        let t0 = monotonicNanos()
        let kernels = try DecodeAttentionKernels(device: device, compiler: nvrtc)
        let seed = self.seed ?? monotonicNanos()
        print("vattn check attention — \(handle.description), NVRTC \(nvrtc.version.major).\(nvrtc.version.minor), "
              + "kernels loaded in \(fmt(Double(monotonicNanos() - t0) / 1e9, 2)) s, seed \(seed)")
        var rng = SplitMix64(seed: seed)
        var passed = 0, failed = 0
        let kvHeads = 2
        for dtype in KVElementType.cudaAttentionTypes {
            let tolerance: Double = dtype == .bf16 ? 1e-2 : 5e-3
            for headDim in [64, 128] {
                for group in headDim == 64 ? [1, 3, 4, 8] : [1, 4, 8] {
                    for (ci, storage) in KVStorage.all.enumerated() {
                        // Lengths: 0, 1, a tile boundary ± 1, non-multiples of tiles and splits, one random.
                        let maxLength = 1100
                        var lengths = [0, 1, 31, 33, 300, 1037, Int.random(in: 1...maxLength, using: &rng)]
                        lengths.shuffle(using: &rng)
                        // Split size: the default (many splits), 64 (many merges), ≥ maxLength (one split: no merge,
                        // the split kernel writes the output), or 2…4 splits (also merged within one block).
                        let chunk: Int? = [nil, 64, 1120, 288, 576][(ci + group + headDim / 64) % 5]
                        let stages = [2, 3, 4, 6][(ci + group) % 4]  // every pipeline depth, every storage
                        let shape = DecodeShape(batch: lengths.count, qHeads: kvHeads * group, kvHeads: kvHeads,
                                                headDim: headDim, dtype: dtype, maxLength: maxLength, chunk: chunk,
                                                stages: stages, limits: kernels.limits)
                        let name = "\(dtype) d\(headDim) gqa\(group) \(storage) chunk \(shape.chunk) s\(stages) "
                            + Self.merges(shape).map(\.rawValue).joined(separator: "+")
                        let err = try runCase(shape: shape, lengths: lengths, storage: storage, handle: handle,
                                              kernels: kernels, cuda: cuda, stream: stream, rng: &rng)
                        let ok = err.nanCount == 0 && err.maxRel <= tolerance
                        print("  \(ok ? "PASS" : "FAIL") \(pad(name, 48)) max rel err \(sci(err.maxRel)) "
                              + "(tol \(sci(tolerance)))\(err.nanCount > 0 ? ", \(err.nanCount) NaN" : "")")
                        if ok { passed += 1 } else { failed += 1 }
                    }
                }
            }
        }
        print(failed == 0 ? "PASS vattn check attention (\(passed) cases)"
                          : "FAIL vattn check attention (\(failed) of \(passed + failed) cases)")
        return failed == 0
    }

    struct CaseError { var maxRel: Double; var nanCount: Int }

    /// The merges a case runs, each checked: with several splits the separate launch and, where a pair's splits fit
    /// one block, the in-block merge. One split: the kernel writes the output itself.
    static func merges(_ shape: DecodeShape) -> [DecodeMerge] {
        guard shape.maxSplits > 1 else { return [.separate] }
        return [.separate] + (shape.splitsFitOneBlock ? [.block] : [])
    }

    func runCase(shape: DecodeShape, lengths: [Int], storage: KVStorage, handle: BackendHandle,
                 kernels: DecodeAttentionKernels, cuda: CUDA, stream: CUDAStream,
                 rng: inout SplitMix64) throws -> CaseError {
        let device = handle.device!
        let batch = lengths.count, d = shape.headDim, kvHeads = shape.kvHeads, qHeads = shape.qHeads
        let row = kvHeads * d
        let total = lengths.reduce(0, +)
        // New K/V rows in fill order (sequence-major), and the query.
        let k = randomHalfs(total * row, dtype: shape.dtype, amplitude: 1, rng: &rng)
        let v = randomHalfs(total * row, dtype: shape.dtype, amplitude: 1, rng: &rng)
        let q = randomHalfs(batch * qHeads * d, dtype: shape.dtype, amplitude: 2, rng: &rng)
        let sourceK = try DeviceBuffer(cuda, byteCount: total * row * 2)
        let sourceV = try DeviceBuffer(cuda, byteCount: total * row * 2)
        try sourceK.upload(k.bits)
        try sourceV.upload(v.bits)
        let layer = 1
        let kv = try DecodeKV(storage: storage, layers: 2, kvHeads: kvHeads, headDim: d, dtype: shape.dtype,
                              lengths: lengths, maxLength: shape.maxLength, handle: handle, kernels: kernels,
                              sourceK: sourceK, sourceV: sourceV, sourceTokens: total, rng: &rng)
        let query = try DeviceBuffer(cuda, byteCount: q.bits.count * 2)
        try query.upload(q.bits)
        let output = try DeviceBuffer(cuda, byteCount: batch * qHeads * d * 2)
        let workspace = try DecodeWorkspace(cuda, shape: shape)
        let scale = 1 / Float(d).squareRoot()
        var gots: [[Float]] = []
        for mode in Self.merges(shape) {
            // Poison: 0xFFFF is NaN in bf16 and fp16; the scratch too, so a read of an unwritten partial shows.
            for b in [output, workspace.maxes, workspace.sums, workspace.accs] {
                try cuda.check(cuda.api.memsetD8(b.address, 0xFF, b.byteCount), "cuMemsetD8")
            }
            try device.synchronize()  // the poison went through the legacy stream
            var s = shape
            s.merge = mode
            try kv.decode(kernels, layer: layer, query: query.address, output: output.address, shape: s,
                          workspace: workspace, scale: scale, stream: stream)
            try stream.synchronize()
            gots.append(try output.download(UInt16.self, count: batch * qHeads * d).map { halfToFloat($0, shape.dtype) })
        }
        try kv.close(stream: stream)

        // CPU reference over a host copy [batch, maxLength, kvHeads, d] in float32 (values already rounded).
        let stride = shape.maxLength * row
        let hostK = UnsafeMutablePointer<Float>.allocate(capacity: batch * stride)
        let hostV = UnsafeMutablePointer<Float>.allocate(capacity: batch * stride)
        defer { hostK.deallocate(); hostV.deallocate() }
        var t = 0
        for (s, n) in lengths.enumerated() {
            for p in 0..<n {
                for j in 0..<row {
                    hostK[s * stride + p * row + j] = k.values[t * row + j]
                    hostV[s * stride + p * row + j] = v.values[t * row + j]
                }
                t += 1
            }
        }
        func strided(_ p: UnsafeMutablePointer<Float>) -> KVTensorView {
            KVTensorView.perLayer(address: UInt(bitPattern: p), dtype: .fp32, maxContext: shape.maxLength,
                               kvHeads: kvHeads, headDim: d)
        }
        var want = [Float](repeating: 0, count: batch * qHeads * d)
        q.values.withUnsafeBufferPointer { qp in
            want.withUnsafeMutableBufferPointer { out in
                decodeAttention(query: qp.baseAddress!, keys: strided(hostK), values: strided(hostV),
                                slots: Array(0..<batch), lengths: lengths,
                                shape: AttentionShape(qHeads: qHeads, kvHeads: kvHeads, headDim: d), scale: scale,
                                output: out.baseAddress!)
            }
        }
        // Relative L2 error per (sequence, query head) row; the worst one counts.
        var maxRel = 0.0, nans = 0
        for got in gots {
        for r in 0..<(batch * qHeads) {
            var num = 0.0, den = 0.0
            for j in 0..<d {
                let g = Double(got[r * d + j]), w = Double(want[r * d + j])
                if g.isNaN || g.isInfinite { nans += 1; continue }
                num += (g - w) * (g - w)
                den += w * w
            }
            maxRel = max(maxRel, den > 0 ? (num / den).squareRoot() : num.squareRoot())
        }
        }
        return CaseError(maxRel: maxRel, nanCount: nans)
    }
}
