import CKernelParams
import CUDADriver
import VAttention

/// Launchers for `cuda/llama.cu`: the Llama forward's element-wise and per-row kernels and the GPU sampler. All
/// arrays are device addresses; bf16 unless noted. Each kernel takes one struct of `kernel_params.h`.
public final class LlamaKernels: @unchecked Sendable {
    private let module: CUDAModule
    private let embedRows: CUDAKernel<EmbedRowsParams>
    private let addRMSNormKernel: CUDAKernel<AddRMSNormParams>
    private let ropeAppendStrided: CUDAKernel<RopeAppendStridedParams>
    private let ropeAppendPaged: CUDAKernel<RopeAppendPagedParams>
    private let siluMulKernel: CUDAKernel<SiluMulParams>
    private let gatherRowsKernel: CUDAKernel<GatherRowsParams>
    private let fillDummyBF16: CUDAKernel<FillDummyParams>
    private let sampleTokens: CUDAKernel<SampleTokensParams>
    /// The device's limits (grid-stride kernels size their grids by its SM count).
    public let limits: CUDADeviceLimits

    static let file = "llama.cu"
    private enum Signature {
        static let embedRows = KernelSignature(file: file, name: "embed_rows", EmbedRowsParams.self)
        static let addRMSNorm = KernelSignature(file: file, name: "add_rmsnorm", AddRMSNormParams.self)
        static let ropeAppendStrided = KernelSignature(file: file, name: "rope_append_strided",
                                                       RopeAppendStridedParams.self)
        static let ropeAppendPaged = KernelSignature(file: file, name: "rope_append_paged", RopeAppendPagedParams.self)
        static let siluMul = KernelSignature(file: file, name: "silu_mul", SiluMulParams.self)
        static let gatherRows = KernelSignature(file: file, name: "gather_rows", GatherRowsParams.self)
        static let fillDummy = KernelSignature(file: file, name: "fill_dummy_bf16", FillDummyParams.self)
        static let sample = KernelSignature(file: file, name: "sample_tokens", SampleTokensParams.self)
    }
    /// Every kernel of `llama.cu`, with its parameter struct: what `init` loads.
    public static let signatures = [
        Signature.embedRows, Signature.addRMSNorm, Signature.ropeAppendStrided, Signature.ropeAppendPaged,
        Signature.siluMul, Signature.gatherRows, Signature.fillDummy, Signature.sample,
    ]

    public convenience init(device: CUDADevice, compiler: NVRTC) throws {
        try self.init(module: try loadKernelModule(Self.file, device: device, compiler: compiler),
                      limits: try device.limits())
    }

    /// Loads every kernel of `module` (built from `llama.cu`) once; a missing one throws naming it.
    init(module: CUDAModule, limits: CUDADeviceLimits) throws {
        self.module = module
        self.limits = limits
        embedRows = try module.kernel(Signature.embedRows, EmbedRowsParams.self)
        addRMSNormKernel = try module.kernel(Signature.addRMSNorm, AddRMSNormParams.self)
        ropeAppendStrided = try module.kernel(Signature.ropeAppendStrided, RopeAppendStridedParams.self)
        ropeAppendPaged = try module.kernel(Signature.ropeAppendPaged, RopeAppendPagedParams.self)
        siluMulKernel = try module.kernel(Signature.siluMul, SiluMulParams.self)
        gatherRowsKernel = try module.kernel(Signature.gatherRows, GatherRowsParams.self)
        fillDummyBF16 = try module.kernel(Signature.fillDummy, FillDummyParams.self)
        sampleTokens = try module.kernel(Signature.sample, SampleTokensParams.self)
    }

    private func threads(_ width: Int) -> UInt32 { UInt32(min(1024, max(32, (width + 31) / 32 * 32))) }

    /// x[t] = table[tokens[t]] as fp32. tokens: int32 `[n]`.
    public func embed(table: UInt64, tokens: UInt64, n: Int, width: Int, into x: UInt64, stream: CUDAStream?) throws {
        guard n > 0 else { return }
        try embedRows.launch(grid: (UInt32(n), 1, 1), block: (threads(width / 4), 1, 1), stream: stream,
                             EmbedRowsParams(table: table, tokens: tokens, x: x, width: Int32(width)))
    }

    /// x += delta (fp32, 0 = none); h = RMSNorm(x)·weight (weight fp32) in bf16. One block per row.
    public func addRMSNorm(x: UInt64, delta: UInt64, weight: UInt64, into h: UInt64, rows: Int, width: Int,
                           epsilon: Float, stream: CUDAStream?) throws {
        guard rows > 0 else { return }
        try addRMSNormKernel.launch(
            grid: (UInt32(rows), 1, 1), block: (threads(width / 4), 1, 1), stream: stream,
            AddRMSNormParams(x: x, delta: delta, weight: weight, h: h, width: Int32(width), epsilon: epsilon))
    }

    /// RoPE on the fused QKV rows `[n, (qHeads + 2·kvHeads)·d]`: rotated Q to `q` `[n, qHeads, d]`, rotated K and V
    /// into the strided cache at (slots[t], positions[t]). invFreq: fp32 `[d/2]`.
    public func ropeAppend(qkv: UInt64, n: Int, qHeads: Int, kvHeads: Int, headDim: Int, positions: UInt64,
                           slots: UInt64, inverseFrequencies: UInt64, q: UInt64, keys: KVTensorView,
                           values: KVTensorView, stream: CUDAStream?) throws {
        precondition(sameStrides(keys, values), "K and V views of one layer share their strides")
        guard n > 0 else { return }
        try ropeAppendStrided.launch(
            grid: (UInt32(n), 1, 1), block: (threads((qHeads + kvHeads) * headDim / 2), 1, 1), stream: stream,
            RopeAppendStridedParams(
                qkv: qkv, qHeads: Int32(qHeads), kvHeads: Int32(kvHeads), headDim: Int32(headDim),
                positions: positions, slots: slots, inverseFrequencies: inverseFrequencies, q: q,
                keys: UInt64(keys.address), values: UInt64(values.address), slotStride: Int64(keys.slotStride),
                tokenStride: Int64(keys.tokenStride), headStride: Int64(keys.headStride)))
    }

    /// Paged twin of `ropeAppend`: token t goes to position positions[t] of block-table row seqs[t].
    public func ropeAppend(qkv: UInt64, n: Int, qHeads: Int, kvHeads: Int, headDim: Int, positions: UInt64,
                           sequences: UInt64, inverseFrequencies: UInt64, q: UInt64, kv: DevicePagedKV,
                           stream: CUDAStream?) throws {
        guard n > 0 else { return }
        try ropeAppendPaged.launch(
            grid: (UInt32(n), 1, 1), block: (threads((qHeads + kvHeads) * headDim / 2), 1, 1), stream: stream,
            RopeAppendPagedParams(
                qkv: qkv, qHeads: Int32(qHeads), kvHeads: Int32(kvHeads), headDim: Int32(headDim),
                positions: positions, sequences: sequences, inverseFrequencies: inverseFrequencies, q: q,
                keyPool: kv.keyPool, valuePool: kv.valuePool, blockTables: kv.blockTables,
                tableStride: Int32(kv.tableStride), blockSize: Int32(kv.blockSize)))
    }

    /// out[t, j] = silu(gateUp[t, j]) · gateUp[t, F + j].
    public func siluMul(gateUp: UInt64, into out: UInt64, rows: Int, width: Int, stream: CUDAStream?) throws {
        let total = rows * width
        guard total > 0 else { return }
        // Grid-stride: 16 blocks of 256 per SM at most.
        try siluMulKernel.launch(
            grid: (UInt32(min(limits.multiprocessors * 16, (total + 255) / 256)), 1, 1), block: (256, 1, 1),
            stream: stream, SiluMulParams(gateUp: gateUp, out: out, width: Int32(width), total: Int64(total)))
    }

    /// out[i] = h[rows[i]] (bf16 rows of `width`).
    public func gatherRows(_ h: UInt64, rows: UInt64, count: Int, width: Int, into out: UInt64,
                           stream: CUDAStream?) throws {
        guard count > 0 else { return }
        try gatherRowsKernel.launch(grid: (UInt32(count), 1, 1), block: (threads(width / 2), 1, 1), stream: stream,
                                    GatherRowsParams(h: h, rows: rows, out: out, width: Int32(width)))
    }

    /// `count` bf16 values of `DummyWeights.value(seed:nameHash:index:rowLength:)` (scale = 1/√rowLength).
    public func fillDummy(_ out: UInt64, count: Int, seed: UInt64, nameHash: UInt64, scale: Float,
                          stream: CUDAStream?) throws {
        // Grid-stride: 32 blocks of 256 per SM at most.
        try fillDummyBF16.launch(
            grid: (UInt32(min(limits.multiprocessors * 32, (count + 255) / 256)), 1, 1), block: (256, 1, 1),
            stream: stream,
            FillDummyParams(out: out, count: Int64(count), seed: seed, nameHash: nameHash, scale: scale))
    }

    /// One token per logits row (fp32 `[rows, vocab]`, rows `rowStride` floats apart) by `sampleToken`'s rule.
    /// params: int32 `[rows, 4]` = temperature bits, top-k, top-p bits, 24-bit draw. out: int32 `[rows]`.
    public func sample(logits: UInt64, rows: Int, vocab: Int, rowStride: Int, params: UInt64, into out: UInt64,
                       stream: CUDAStream?) throws {
        guard rows > 0 else { return }
        try sampleTokens.launch(
            grid: (UInt32(rows), 1, 1), block: (1024, 1, 1), stream: stream,
            SampleTokensParams(logits: logits, rowStride: Int64(rowStride), settings: params, out: out,
                               vocab: Int32(vocab)))
    }
}
