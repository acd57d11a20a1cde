import CCUDA
import CUDADriver

/// Storage type of K, V, queries and outputs for the GPU attention kernels.
public enum AttentionDType: String, Sendable, CaseIterable {
    case bf16, fp16
}

/// K and V of one layer in strided (vAttention virtual tensor) form, device addresses: element (slot, token, head, d)
/// of K is at `keys + (slot·slotStride + token·tokenStride + head·headStride + d)·2`. K and V share the strides (true
/// for both `KVCacheManager` layouts). Build it from two `KVTensorView`s.
public struct DeviceStridedKV: Sendable, Hashable {
    public var keys: UInt64
    public var values: UInt64
    public var slotStride: Int
    public var tokenStride: Int
    public var headStride: Int

    public init(keys: UInt64, values: UInt64, slotStride: Int, tokenStride: Int, headStride: Int) {
        self.keys = keys
        self.values = values
        self.slotStride = slotStride
        self.tokenStride = tokenStride
        self.headStride = headStride
    }
}

/// K and V of one layer in the paged (vLLM) form: pools `[numBlocks, blockSize, kvHeads, headDim]` and an int32 block
/// table `[batch, tableStride]` in device memory (row s: the physical blocks of sequence s, in order).
public struct DevicePagedKV: Sendable, Hashable {
    public var keyPool: UInt64
    public var valuePool: UInt64
    public var blockTables: UInt64
    public var tableStride: Int
    public var blockSize: Int
    public var kvHeads: Int
    public var headDim: Int

    public init(keyPool: UInt64, valuePool: UInt64, blockTables: UInt64, tableStride: Int, blockSize: Int,
                kvHeads: Int, headDim: Int) {
        self.keyPool = keyPool
        self.valuePool = valuePool
        self.blockTables = blockTables
        self.tableStride = tableStride
        self.blockSize = blockSize
        self.kvHeads = kvHeads
        self.headDim = headDim
    }

    var tokenStride: Int { kvHeads * headDim }
    var blockStride: Int { blockSize * kvHeads * headDim }
}

/// How the split kernel's partials of one (sequence, KV head) are combined when a sequence has several splits.
public enum DecodeMerge: String, Sendable, CaseIterable {
    /// All splits of a pair are warps of one block, interleaved over the sequence (warp w takes tiles w, w + W, …),
    /// and combine in shared memory: no partials in global memory, no second launch. Needs 2…`maxBlockWarps` splits
    /// that fit one block's shared memory (`splitsFitOneBlock`).
    case block
    /// Each split writes fp32 partials; a second launch (`decode_merge_*`) combines them.
    case separate
}

/// A decode launch's fixed shape (what a CUDA graph would be captured for): batch, heads, the longest context the
/// grid covers, and the split size. Lengths and slots are read from device memory at run time.
public struct DecodeShape: Sendable, Hashable {
    public var batch: Int
    public var qHeads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var dtype: AttentionDType
    /// The grid covers this many tokens per sequence; longer sequences are not allowed.
    public var maxLength: Int
    /// Tokens per split (a multiple of 32).
    public var chunk: Int
    /// cp.async pipeline depth of the split kernel (2…8): stages − 1 tiles of 32 tokens in flight per warp.
    public var stages: Int
    /// How splits are combined (with one split the kernel writes the output itself, whatever this says). `init`
    /// picks `.block` where `canMergeInBlock`, else `.separate`.
    public var merge: DecodeMerge

    /// Most warps in one split-kernel block (the kernel's MAX_BLOCK_WARPS).
    public static let maxBlockWarps = 4

    public var group: Int { qHeads / kvHeads }
    public var maxSplits: Int { max(1, (maxLength + chunk - 1) / chunk) }
    /// Dynamic shared memory of one warp of the split kernel.
    public var sharedBytesPerWarp: Int { DecodeShape.sharedBytes(stages: stages, headDim: headDim) }
    /// The merge this shape launches: "none" with one split (the kernel writes the output), else `merge`.
    public var mergeName: String { maxSplits == 1 ? "none" : merge.rawValue }
    /// Warps per split-kernel block: all splits of a pair in block mode, else one.
    public var warpsPerBlock: Int { merge == .block ? maxSplits : 1 }
    /// Dynamic shared memory of one split-kernel block.
    public var sharedBytes: Int { warpsPerBlock * sharedBytesPerWarp }

    /// `stages` K and V tiles of 32 tokens, unpadded rows (the kernel swizzles 16-byte chunks instead).
    public static func sharedBytes(stages: Int, headDim: Int) -> Int { stages * 2 * 32 * 2 * headDim }

    /// One block per (sequence, KV head) holding all its splits fits (2…maxBlockWarps splits within one block's
    /// shared memory) and takes no more waves than one-warp blocks. (Multi-warp blocks can strand shared memory: with
    /// 48 KB per warp an SM holds four one-warp blocks but only one three-warp block.)
    public func canMergeInBlock(multiprocessors: Int = 132, sharedPerSM: Int = 233_472) -> Bool {
        guard splitsFitOneBlock else { return false }
        let w = maxSplits, perWarp = sharedBytesPerWarp, pairs = batch * kvHeads
        let blocks = multiprocessors * (sharedPerSM / (w * perWarp + 1024))
        let warps = multiprocessors * min(32, sharedPerSM / (perWarp + 1024))
        return (pairs + blocks - 1) / blocks <= (pairs * w + warps - 1) / warps
    }

    /// 2…maxBlockWarps splits whose warps fit one block's shared memory (what `.block` needs to launch at all).
    public var splitsFitOneBlock: Bool {
        (2...DecodeShape.maxBlockWarps).contains(maxSplits)
            && maxSplits * sharedBytesPerWarp <= DecodeShape.maxBlockSharedBytes
    }

    /// The most dynamic shared memory one block may use on Hopper (227 KB).
    static let maxBlockSharedBytes = 232_448

    /// Grid of the split kernel: (KV heads, blocks per sequence, batch).
    var splitGrid: (UInt32, UInt32, UInt32) {
        (UInt32(kvHeads), UInt32(maxSplits / warpsPerBlock), UInt32(batch))
    }

    /// A second launch combines the partials.
    var needsMergeLaunch: Bool { merge == .separate && maxSplits > 1 }

    /// The split kernel for `storage` ("strided" or "paged").
    func kernelName(_ storage: String) -> String {
        "decode_partial_\(storage)_\(dtype.rawValue)_d\(headDim)_g\(group)"
    }

    /// `chunk: nil` picks the split size. With at least one (sequence, KV head) pair per SM, each pair runs as one
    /// block of (up to) `maxBlockWarps` interleaved warps (block merge; same-run A/B on the H100, 2026-11-22, graph µs:
    /// 256×1K 354.5 → 347.9 against one warp per pair, 128×2K 350.6 → 349.3, 64×4K 349.6 → 350.0). With fewer pairs,
    /// from a wave model: one-warp blocks, as many resident as shared memory allows; every split costs its tokens plus a
    /// fixed ~64-token start-up; the kernel takes ceil(items / resident) waves; the split count minimizing
    /// waves × (chunk + 64) wins (and merges in one block where `canMergeInBlock`).
    public init(batch: Int, qHeads: Int, kvHeads: Int, headDim: Int, dtype: AttentionDType, maxLength: Int,
                chunk: Int? = nil, stages: Int = 3, multiprocessors: Int = 132, sharedPerSM: Int = 233_472) {
        precondition(batch > 0 && kvHeads > 0 && qHeads % kvHeads == 0 && maxLength > 0)
        precondition([64, 128].contains(headDim), "head dim 64 or 128")
        precondition([1, 2, 3, 4, 8].contains(qHeads / kvHeads), "GQA group 1, 2, 3, 4 or 8")
        precondition((2...8).contains(stages), "2…8 stages")
        self.batch = batch
        self.qHeads = qHeads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.dtype = dtype
        self.maxLength = maxLength
        self.stages = stages
        if let chunk {
            precondition(chunk > 0 && chunk % 32 == 0, "chunk must be a positive multiple of 32")
            self.chunk = chunk
        } else if batch * kvHeads >= multiprocessors {
            let perWarp = DecodeShape.sharedBytes(stages: stages, headDim: headDim)
            let warps = min(DecodeShape.maxBlockWarps, DecodeShape.maxBlockSharedBytes / perWarp)
            self.chunk = ((maxLength + warps - 1) / warps + 31) / 32 * 32
        } else {
            let smem = DecodeShape.sharedBytes(stages: stages, headDim: headDim)
            let resident = multiprocessors * max(1, min(32, sharedPerSM / (smem + 1024)))
            let pairs = batch * kvHeads
            var best = (cost: Int.max, chunk: maxLength)
            var lastChunk = -1
            for splits in 1...max(1, maxLength / 32) {
                let c = (maxLength + splits - 1) / splits
                let chunk = (c + 31) / 32 * 32
                if chunk == lastChunk { continue }
                lastChunk = chunk
                if chunk < 64 && splits > 1 { break }
                let items = pairs * ((maxLength + chunk - 1) / chunk)
                let waves = (items + resident - 1) / resident
                let cost = waves * (chunk + 64)
                if cost < best.cost { best = (cost, chunk) }
            }
            self.chunk = best.chunk
        }
        merge = .separate
        if canMergeInBlock(multiprocessors: multiprocessors, sharedPerSM: sharedPerSM) { merge = .block }
    }
}

/// fp32 scratch for split partials, sized for a shape.
public final class DecodeWorkspace: @unchecked Sendable {
    public let maxes: DeviceBuffer
    public let sums: DeviceBuffer
    public let accs: DeviceBuffer
    public let shape: DecodeShape

    public init(_ cuda: CUDA, shape: DecodeShape) throws {
        let partials = shape.batch * shape.qHeads * shape.maxSplits
        maxes = try DeviceBuffer(cuda, byteCount: partials * 4)
        sums = try DeviceBuffer(cuda, byteCount: partials * 4)
        accs = try DeviceBuffer(cuda, byteCount: partials * shape.headDim * 4)
        self.shape = shape
    }
}

/// The GPU decode-attention and KV-append kernels (`decode_attention.cu`, `kv_append.cu`), compiled with NVRTC.
public final class DecodeAttentionKernels: @unchecked Sendable {
    let attention: CUDAModule
    let append: CUDAModule
    private var functions: [String: CUDAFunction] = [:]
    public let multiprocessors: Int

    public init(device: CUDADevice, compiler: NVRTC) throws {
        attention = try loadKernelModule("decode_attention.cu", device: device, compiler: compiler)
        append = try loadKernelModule("kv_append.cu", device: device, compiler: compiler)
        multiprocessors = try device.attribute(Int32(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT_))
    }

    private func function(_ module: CUDAModule, _ name: String) throws -> CUDAFunction {
        if let f = functions[name] { return f }
        let f = try module.function(name)
        if name.hasPrefix("decode_partial") {
            try f.setMaxDynamicSharedMemory(DecodeShape.maxBlockSharedBytes)
            try? f.setAttribute(9, 100)  // CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: all shared memory
        }
        functions[name] = f
        return f
    }

    /// Decode attention over strided K/V: sequence b attends to the first `lengths[b]` tokens of slot `slots[b]`.
    /// One launch, plus a log-sum-exp merge launch when `shape.merge == .separate` and there are several splits (with
    /// `.block` a pair's splits merge in shared memory; one split normalizes and writes the output itself).
    /// - query, output: `[batch, qHeads, headDim]` of `shape.dtype`; slots, lengths: int32 `[batch]` (device).
    /// Output rows of zero-length sequences are zeros.
    public func decode(query: UInt64, kv: DeviceStridedKV, slots: UInt64, lengths: UInt64, output: UInt64,
                       shape: DecodeShape, workspace: DecodeWorkspace, scale: Float, stream: CUDAStream?) throws {
        precondition(workspace.shape.batch >= shape.batch && workspace.shape.qHeads == shape.qHeads
                     && workspace.shape.maxSplits >= shape.maxSplits && workspace.shape.headDim == shape.headDim)
        checkMerge(shape)
        try function(attention, shape.kernelName("strided")).launch(
            grid: shape.splitGrid, block: (32, UInt32(shape.warpsPerBlock), 1),
            sharedBytes: UInt32(shape.sharedBytes), stream: stream, [
                .pointer(query), .pointer(kv.keys), .pointer(kv.values), .int64(Int64(kv.slotStride)),
                .int64(Int64(kv.tokenStride)), .int64(Int64(kv.headStride)), .pointer(slots), .pointer(lengths),
                .int32(Int32(shape.chunk)), .int32(Int32(workspace.shape.maxSplits)), .int32(Int32(shape.stages)),
                .float(scale * log2e),
                .pointer(workspace.maxes.address), .pointer(workspace.sums.address), .pointer(workspace.accs.address),
                .pointer(shape.needsMergeLaunch ? 0 : output),
            ])
        if shape.needsMergeLaunch {
            try merge(lengths: lengths, output: output, shape: shape, workspace: workspace, stream: stream)
        }
    }

    /// Paged twin of `decode`: sequence b reads its tokens through row b of the block table.
    public func decode(query: UInt64, kv: DevicePagedKV, lengths: UInt64, output: UInt64, shape: DecodeShape,
                       workspace: DecodeWorkspace, scale: Float, stream: CUDAStream?) throws {
        precondition(workspace.shape.batch >= shape.batch && workspace.shape.qHeads == shape.qHeads
                     && workspace.shape.maxSplits >= shape.maxSplits && workspace.shape.headDim == shape.headDim)
        precondition(kv.kvHeads == shape.kvHeads && kv.headDim == shape.headDim)
        precondition(kv.tableStride * kv.blockSize >= shape.maxLength, "block table narrower than maxLength")
        checkMerge(shape)
        try function(attention, shape.kernelName("paged")).launch(
            grid: shape.splitGrid, block: (32, UInt32(shape.warpsPerBlock), 1),
            sharedBytes: UInt32(shape.sharedBytes), stream: stream, [
                .pointer(query), .pointer(kv.keyPool), .pointer(kv.valuePool), .pointer(kv.blockTables),
                .int32(Int32(kv.tableStride)), .int32(Int32(kv.blockSize)), .int64(Int64(kv.blockStride)),
                .int64(Int64(kv.tokenStride)), .int64(Int64(kv.headDim)), .pointer(lengths),
                .int32(Int32(shape.chunk)), .int32(Int32(workspace.shape.maxSplits)), .int32(Int32(shape.stages)),
                .float(scale * log2e),
                .pointer(workspace.maxes.address), .pointer(workspace.sums.address), .pointer(workspace.accs.address),
                .pointer(shape.needsMergeLaunch ? 0 : output),
            ])
        if shape.needsMergeLaunch {
            try merge(lengths: lengths, output: output, shape: shape, workspace: workspace, stream: stream)
        }
    }

    private func checkMerge(_ shape: DecodeShape) {
        precondition(shape.merge != .block || shape.maxSplits == 1 || shape.splitsFitOneBlock,
                     "block merge: \(shape.maxSplits) splits of \(shape.sharedBytesPerWarp) bytes do not fit one block")
    }

    private func merge(lengths: UInt64, output: UInt64, shape: DecodeShape, workspace: DecodeWorkspace,
                       stream: CUDAStream?) throws {
        try function(attention, "decode_merge_\(shape.dtype.rawValue)_d\(shape.headDim)").launch(
            grid: (UInt32(shape.qHeads), UInt32(shape.batch), 1),
            block: (UInt32(shape.headDim), shape.maxSplits >= 16 ? 4 : 1, 1),
            stream: stream, [
                .pointer(workspace.maxes.address), .pointer(workspace.sums.address),
                .pointer(workspace.accs.address), .pointer(lengths), .int32(Int32(shape.chunk)),
                .int32(Int32(workspace.shape.maxSplits)), .pointer(output),
            ])
    }

    /// Writes `tokens` new K/V rows (`[tokens, kvHeads, headDim]`, bf16 or fp16: a bit copy) to (slots[i],
    /// positions[i]) of the strided cache. slots, positions: int32 `[tokens]` (device).
    public func append(keys: UInt64, values: UInt64, tokens: Int, into kv: DeviceStridedKV, slots: UInt64,
                       positions: UInt64, kvHeads: Int, headDim: Int, stream: CUDAStream?) throws {
        precondition(headDim % 8 == 0)
        guard tokens > 0 else { return }
        try function(append, "kv_append_strided").launch(
            grid: (UInt32(tokens), 1, 1), block: (UInt32(min(256, kvHeads * headDim / 8)), 1, 1), stream: stream, [
                .pointer(keys), .pointer(values), .pointer(kv.keys), .pointer(kv.values),
                .int64(Int64(kv.slotStride)), .int64(Int64(kv.tokenStride)), .int64(Int64(kv.headStride)),
                .pointer(slots), .pointer(positions), .int32(Int32(kvHeads)), .int32(Int32(headDim)),
            ])
    }

    /// Paged twin of `append`: token i goes to position positions[i] of sequence sequences[i] (its block-table row
    /// must already cover the position).
    public func append(keys: UInt64, values: UInt64, tokens: Int, into kv: DevicePagedKV, sequences: UInt64,
                       positions: UInt64, stream: CUDAStream?) throws {
        guard tokens > 0 else { return }
        try function(append, "kv_append_paged").launch(
            grid: (UInt32(tokens), 1, 1), block: (UInt32(min(256, kv.kvHeads * kv.headDim / 8)), 1, 1),
            stream: stream, [
                .pointer(keys), .pointer(values), .pointer(kv.keyPool), .pointer(kv.valuePool),
                .pointer(kv.blockTables), .int32(Int32(kv.tableStride)), .int32(Int32(kv.blockSize)),
                .int64(Int64(kv.blockStride)), .int64(Int64(kv.tokenStride)), .int64(Int64(kv.headDim)),
                .pointer(sequences), .pointer(positions), .int32(Int32(kv.kvHeads)), .int32(Int32(kv.headDim)),
            ])
    }

    /// Device-to-device copy of `bytes` (a multiple of 16) with 16-byte accesses: the bandwidth ceiling.
    public func copy(from source: UInt64, to destination: UInt64, bytes: Int, stream: CUDAStream?) throws {
        precondition(bytes % 16 == 0)
        try function(attention, "copy_u128").launch(
            grid: (UInt32(multiprocessors * 4), 1, 1), block: (512, 1, 1), stream: stream,
            [.pointer(source), .pointer(destination), .int64(Int64(bytes / 16))])
    }
}

private let log2e: Float = 1.4426950408889634
