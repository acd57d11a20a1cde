import CUDADriver

/// Launchers for `cuda/llama.cu`: the Llama forward's element-wise and per-row kernels and the GPU sampler. All
/// arrays are device addresses; bf16 unless noted.
public final class LlamaKernels: @unchecked Sendable {
    private let module: CUDAModule
    private let f: [String: CUDAFunction]

    public init(device: CUDADevice, compiler: NVRTC) throws {
        module = try loadKernelModule("llama.cu", device: device, compiler: compiler)
        var f: [String: CUDAFunction] = [:]
        for name in ["embed_rows", "add_rmsnorm", "rope_append_strided", "rope_append_paged", "silu_mul",
                     "gather_rows", "fill_dummy_bf16", "sample_tokens"] {
            f[name] = try module.function(name)
        }
        self.f = f
    }

    private func threads(_ width: Int) -> UInt32 { UInt32(min(1024, max(32, (width + 31) / 32 * 32))) }

    /// x[t] = table[tokens[t]] as fp32. tokens: int32 `[n]`.
    public func embed(table: UInt64, tokens: UInt64, n: Int, width: Int, into x: UInt64, stream: CUDAStream?) throws {
        guard n > 0 else { return }
        try f["embed_rows"]!.launch(grid: (UInt32(n), 1, 1), block: (threads(width / 4), 1, 1), stream: stream,
                                    [.pointer(table), .pointer(tokens), .pointer(x), .int32(Int32(width))])
    }

    /// x += delta (fp32, 0 = none); h = RMSNorm(x)·weight (weight fp32) in bf16. One block per row.
    public func addRMSNorm(x: UInt64, delta: UInt64, weight: UInt64, into h: UInt64, rows: Int, width: Int,
                           epsilon: Float, stream: CUDAStream?) throws {
        guard rows > 0 else { return }
        try f["add_rmsnorm"]!.launch(grid: (UInt32(rows), 1, 1), block: (threads(width / 4), 1, 1), stream: stream, [
            .pointer(x), .pointer(delta), .pointer(weight), .pointer(h), .int32(Int32(width)), .float(epsilon),
        ])
    }

    /// RoPE on the fused QKV rows `[n, (qHeads + 2·kvHeads)·d]`: rotated Q to `q` `[n, qHeads, d]`, rotated K and V
    /// into the strided cache at (slots[t], positions[t]). invFreq: fp32 `[d/2]`.
    public func ropeAppend(qkv: UInt64, n: Int, qHeads: Int, kvHeads: Int, headDim: Int, positions: UInt64,
                           slots: UInt64, inverseFrequencies: UInt64, q: UInt64, kv: DeviceStridedKV,
                           stream: CUDAStream?) throws {
        guard n > 0 else { return }
        try f["rope_append_strided"]!.launch(
            grid: (UInt32(n), 1, 1), block: (threads((qHeads + kvHeads) * headDim / 2), 1, 1), stream: stream, [
                .pointer(qkv), .int32(Int32(qHeads)), .int32(Int32(kvHeads)), .int32(Int32(headDim)),
                .pointer(positions), .pointer(slots), .pointer(inverseFrequencies), .pointer(q), .pointer(kv.keys),
                .pointer(kv.values), .int64(Int64(kv.slotStride)), .int64(Int64(kv.tokenStride)),
                .int64(Int64(kv.headStride)),
            ])
    }

    /// Paged twin of `ropeAppend`: token t goes to position positions[t] of block-table row seqs[t].
    public func ropeAppend(qkv: UInt64, n: Int, qHeads: Int, kvHeads: Int, headDim: Int, positions: UInt64,
                           sequences: UInt64, inverseFrequencies: UInt64, q: UInt64, kv: DevicePagedKV,
                           stream: CUDAStream?) throws {
        guard n > 0 else { return }
        try f["rope_append_paged"]!.launch(
            grid: (UInt32(n), 1, 1), block: (threads((qHeads + kvHeads) * headDim / 2), 1, 1), stream: stream, [
                .pointer(qkv), .int32(Int32(qHeads)), .int32(Int32(kvHeads)), .int32(Int32(headDim)),
                .pointer(positions), .pointer(sequences), .pointer(inverseFrequencies), .pointer(q),
                .pointer(kv.keyPool), .pointer(kv.valuePool), .pointer(kv.blockTables), .int32(Int32(kv.tableStride)),
                .int32(Int32(kv.blockSize)),
            ])
    }

    /// out[t, j] = silu(gateUp[t, j]) · gateUp[t, F + j].
    public func siluMul(gateUp: UInt64, into out: UInt64, rows: Int, width: Int, stream: CUDAStream?) throws {
        let total = rows * width
        guard total > 0 else { return }
        try f["silu_mul"]!.launch(grid: (UInt32(min(132 * 16, (total + 255) / 256)), 1, 1), block: (256, 1, 1),
                                  stream: stream, [.pointer(gateUp), .pointer(out), .int32(Int32(width)),
                                                   .int64(Int64(total))])
    }

    /// out[i] = h[rows[i]] (bf16 rows of `width`).
    public func gatherRows(_ h: UInt64, rows: UInt64, count: Int, width: Int, into out: UInt64,
                           stream: CUDAStream?) throws {
        guard count > 0 else { return }
        try f["gather_rows"]!.launch(grid: (UInt32(count), 1, 1), block: (threads(width / 2), 1, 1), stream: stream,
                                     [.pointer(h), .pointer(rows), .pointer(out), .int32(Int32(width))])
    }

    /// `count` bf16 values of `DummyWeights.value(seed:nameHash:index:rowLength:)` (scale = 1/√rowLength).
    public func fillDummy(_ out: UInt64, count: Int, seed: UInt64, nameHash: UInt64, scale: Float,
                          stream: CUDAStream?) throws {
        try f["fill_dummy_bf16"]!.launch(grid: (UInt32(min(132 * 32, (count + 255) / 256)), 1, 1),
                                         block: (256, 1, 1), stream: stream, [
                                            .pointer(out), .int64(Int64(count)), .int64(Int64(bitPattern: seed)),
                                            .int64(Int64(bitPattern: nameHash)), .float(scale),
                                         ])
    }

    /// One token per logits row (fp32 `[rows, vocab]`, rows `rowStride` floats apart) by `sampleToken`'s rule.
    /// params: int32 `[rows, 4]` = temperature bits, top-k, top-p bits, 24-bit draw. out: int32 `[rows]`.
    public func sample(logits: UInt64, rows: Int, vocab: Int, rowStride: Int, params: UInt64, into out: UInt64,
                       stream: CUDAStream?) throws {
        guard rows > 0 else { return }
        try f["sample_tokens"]!.launch(grid: (UInt32(rows), 1, 1), block: (1024, 1, 1), stream: stream, [
            .pointer(logits), .int64(Int64(rowStride)), .pointer(params), .pointer(out), .int32(Int32(vocab)),
        ])
    }
}
