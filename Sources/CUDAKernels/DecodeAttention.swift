import CKernelParams
import CUDADriver
import VAttention

/// Storage type of K, V, queries and outputs for the GPU attention kernels.
extension KVElementType {
    /// The element types the CUDA attention kernels are built for (K/V, queries and outputs share it).
    public static let cudaAttentionTypes: [KVElementType] = [.bf16, .fp16]
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
    public var dtype: KVElementType
    /// The grid covers this many tokens per sequence; longer sequences are not allowed.
    public var maxLength: Int
    /// Tokens per split (a multiple of 32).
    public var chunk: Int
    /// cp.async pipeline depth of the split kernel (2…8): stages − 1 tiles of 32 tokens in flight per warp.
    public var stages: Int
    /// How splits are combined (with one split the kernel writes the output itself, whatever this says). `init`
    /// picks `.block` where `canMergeInBlock`, else `.separate`.
    public var merge: DecodeMerge
    /// The device the shape is planned for (SMs, shared memory per SM and per block).
    public var limits: CUDADeviceLimits

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
    public func canMergeInBlock() -> Bool {
        guard splitsFitOneBlock else { return false }
        let w = maxSplits, perWarp = sharedBytesPerWarp, pairs = batch * kvHeads
        let blocks = limits.multiprocessors * limits.residentBlocks(sharedBytes: w * perWarp)
        let warps = limits.multiprocessors * limits.residentBlocks(sharedBytes: perWarp)
        return (pairs + blocks - 1) / blocks <= (pairs * w + warps - 1) / warps
    }

    /// 2…maxBlockWarps splits whose warps fit one block's shared memory (what `.block` needs to launch at all).
    public var splitsFitOneBlock: Bool {
        (2...DecodeShape.maxBlockWarps).contains(maxSplits)
            && maxSplits * sharedBytesPerWarp <= limits.sharedMemoryPerBlockOptIn
    }

    /// Grid of the split kernel: (KV heads, blocks per sequence, batch).
    var splitGrid: (UInt32, UInt32, UInt32) {
        (UInt32(kvHeads), UInt32(maxSplits / warpsPerBlock), UInt32(batch))
    }

    /// A second launch combines the partials.
    var needsMergeLaunch: Bool { merge == .separate && maxSplits > 1 }

    /// `chunk: nil` picks the split size. With at least one (sequence, KV head) pair per SM, each pair runs as one
    /// block of (up to) `maxBlockWarps` interleaved warps (block merge). With fewer pairs, from a wave model: one-warp
    /// blocks, as many resident as shared memory allows; every split costs its tokens plus a fixed ~64-token start-up;
    /// the kernel takes ceil(items / resident) waves; the split count minimizing waves × (chunk + 64) wins (and merges
    /// in one block where `canMergeInBlock`). `limits`: the device's (`DecodeAttentionKernels.limits`).
    /// Why: docs/decisions/002-decode-split-geometry.md
    public init(batch: Int, qHeads: Int, kvHeads: Int, headDim: Int, dtype: KVElementType, maxLength: Int,
                chunk: Int? = nil, stages: Int = 3, limits: CUDADeviceLimits) {
        precondition(batch > 0 && kvHeads > 0 && qHeads % kvHeads == 0 && maxLength > 0)
        precondition(DecodeAttentionKernels.headDims.contains(headDim), "head dim 64 or 128")
        precondition(KVElementType.cudaAttentionTypes.contains(dtype), "the CUDA attention kernels take bf16 or fp16")
        precondition(DecodeAttentionKernels.groups.contains(qHeads / kvHeads), "GQA group 1, 2, 3, 4 or 8")
        precondition((2...8).contains(stages), "2…8 stages")
        self.batch = batch
        self.qHeads = qHeads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.dtype = dtype
        self.maxLength = maxLength
        self.stages = stages
        self.limits = limits
        if let chunk {
            precondition(chunk > 0 && chunk % 32 == 0, "chunk must be a positive multiple of 32")
            self.chunk = chunk
        } else if batch * kvHeads >= limits.multiprocessors {
            let perWarp = DecodeShape.sharedBytes(stages: stages, headDim: headDim)
            let warps = min(DecodeShape.maxBlockWarps, limits.sharedMemoryPerBlockOptIn / perWarp)
            self.chunk = ((maxLength + warps - 1) / warps + 31) / 32 * 32
        } else {
            let smem = DecodeShape.sharedBytes(stages: stages, headDim: headDim)
            let resident = limits.multiprocessors * max(1, limits.residentBlocks(sharedBytes: smem))
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
        if canMergeInBlock() { merge = .block }
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

/// The GPU decode-attention and KV-append kernels (`decode_attention.cu`, `kv_append.cu`), compiled with NVRTC. Every
/// kernel is loaded once, at init; each takes one struct of `kernel_params.h`.
public final class DecodeAttentionKernels: @unchecked Sendable {
    let attention: CUDAModule
    let append: CUDAModule
    private struct Variant: Hashable { var dtype: KVElementType, headDim: Int, group: Int }
    private let strided: [Variant: CUDAKernel<DecodeStridedParams>]
    private let paged: [Variant: CUDAKernel<DecodePagedParams>]
    /// Keyed by group 1 (the merge kernels exist per dtype and head dim).
    private let merges: [Variant: CUDAKernel<DecodeMergeParams>]
    private let copyKernel: CUDAKernel<CopyParams>
    private let appendStrided: CUDAKernel<KVAppendStridedParams>
    private let appendPaged: CUDAKernel<KVAppendPagedParams>
    /// The device's limits: what `DecodeShape`s for this device are planned with.
    public let limits: CUDADeviceLimits

    /// The head dims and GQA groups the split kernels are instantiated for (decode_attention.cu's DECODE_ALL_G).
    public static let headDims = [64, 128]
    public static let groups = [1, 2, 3, 4, 8]

    static let attentionFile = "decode_attention.cu", appendFile = "kv_append.cu"
    private static func partial(_ storage: String, _ v: Variant) -> String {
        "decode_partial_\(storage)_\(v.dtype.rawValue)_d\(v.headDim)_g\(v.group)"
    }
    private static func mergeName(_ v: Variant) -> String { "decode_merge_\(v.dtype.rawValue)_d\(v.headDim)" }
    private static var variants: [Variant] {
        KVElementType.cudaAttentionTypes.flatMap { t in
            headDims.flatMap { d in groups.map { Variant(dtype: t, headDim: d, group: $0) } }
        }
    }
    private static let copySignature = KernelSignature(file: attentionFile, name: "copy_u128", CopyParams.self)
    private static let appendStridedSignature = KernelSignature(file: appendFile, name: "kv_append_strided",
                                                                KVAppendStridedParams.self)
    private static let appendPagedSignature = KernelSignature(file: appendFile, name: "kv_append_paged",
                                                              KVAppendPagedParams.self)

    /// Every kernel of `decode_attention.cu` and `kv_append.cu`, with its parameter struct: what `init` loads.
    public static var signatures: [KernelSignature] {
        variants.flatMap { v in
            [KernelSignature(file: attentionFile, name: partial("strided", v), DecodeStridedParams.self),
             KernelSignature(file: attentionFile, name: partial("paged", v), DecodePagedParams.self)]
        }
            + variants.filter { $0.group == 1 }.map {
                KernelSignature(file: attentionFile, name: mergeName($0), DecodeMergeParams.self)
            }
            + [copySignature, appendStridedSignature, appendPagedSignature]
    }

    public convenience init(device: CUDADevice, compiler: NVRTC) throws {
        try self.init(attention: try loadKernelModule(Self.attentionFile, device: device, compiler: compiler),
                      append: try loadKernelModule(Self.appendFile, device: device, compiler: compiler),
                      limits: try device.limits())
    }

    /// Loads every kernel of the two modules once (a missing one throws naming it) and lets the split kernels use
    /// all of a block's opt-in shared memory.
    init(attention: CUDAModule, append: CUDAModule, limits: CUDADeviceLimits) throws {
        self.attention = attention
        self.append = append
        self.limits = limits
        func splitKernel<P>(_ storage: String, _ v: Variant, _ type: P.Type) throws -> CUDAKernel<P> {
            let k = try attention.kernel(
                KernelSignature(file: Self.attentionFile, name: Self.partial(storage, v), type), type)
            try k.function.setMaxDynamicSharedMemory(limits.sharedMemoryPerBlockOptIn)
            try? k.function.setPreferredSharedMemoryCarveout(percent: 100)  // all of L1 as shared memory (a hint)
            return k
        }
        var strided: [Variant: CUDAKernel<DecodeStridedParams>] = [:]
        var paged: [Variant: CUDAKernel<DecodePagedParams>] = [:]
        var merges: [Variant: CUDAKernel<DecodeMergeParams>] = [:]
        for v in Self.variants {
            strided[v] = try splitKernel("strided", v, DecodeStridedParams.self)
            paged[v] = try splitKernel("paged", v, DecodePagedParams.self)
            if v.group == 1 {
                merges[v] = try attention.kernel(
                    KernelSignature(file: Self.attentionFile, name: Self.mergeName(v), DecodeMergeParams.self),
                    DecodeMergeParams.self)
            }
        }
        self.strided = strided
        self.paged = paged
        self.merges = merges
        copyKernel = try attention.kernel(Self.copySignature, CopyParams.self)
        appendStrided = try append.kernel(Self.appendStridedSignature, KVAppendStridedParams.self)
        appendPaged = try append.kernel(Self.appendPagedSignature, KVAppendPagedParams.self)
    }

    private func variant(_ shape: DecodeShape) -> Variant {
        Variant(dtype: shape.dtype, headDim: shape.headDim, group: shape.group)
    }

    /// Decode attention over strided K/V: sequence b attends to the first `lengths[b]` tokens of slot `slots[b]`.
    /// One launch, plus a log-sum-exp merge launch when `shape.merge == .separate` and there are several splits (with
    /// `.block` a pair's splits merge in shared memory; one split normalizes and writes the output itself).
    /// - query, output: `[batch, qHeads, headDim]` of `shape.dtype`; slots, lengths: int32 `[batch]` (device).
    /// Output rows of zero-length sequences are zeros.
    public func decode(query: UInt64, keys: KVTensorView, values: KVTensorView, slots: UInt64, lengths: UInt64,
                       output: UInt64, shape: DecodeShape, workspace: DecodeWorkspace, scale: Float,
                       stream: CUDAStream?) throws {
        precondition(sameStrides(keys, values), "K and V views of one layer share their strides")
        precondition(workspace.shape.batch >= shape.batch && workspace.shape.qHeads == shape.qHeads
                     && workspace.shape.maxSplits >= shape.maxSplits && workspace.shape.headDim == shape.headDim)
        checkMerge(shape)
        guard let kernel = strided[variant(shape)] else { preconditionFailure("no decode kernel for \(shape)") }
        try kernel.launch(
            grid: shape.splitGrid, block: (32, UInt32(shape.warpsPerBlock), 1),
            sharedBytes: UInt32(shape.sharedBytes), stream: stream,
            DecodeStridedParams(
                q: query, keys: UInt64(keys.address), values: UInt64(values.address), slotStride: Int64(keys.slotStride),
                tokenStride: Int64(keys.tokenStride), headStride: Int64(keys.headStride), slots: slots, lengths: lengths,
                chunk: Int32(shape.chunk), maxSplits: Int32(workspace.shape.maxSplits), stages: Int32(shape.stages),
                scaleLog2: scale * log2e, partialMax: workspace.maxes.address, partialSum: workspace.sums.address,
                partialAcc: workspace.accs.address, out: shape.needsMergeLaunch ? 0 : output))
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
        guard let kernel = paged[variant(shape)] else { preconditionFailure("no decode kernel for \(shape)") }
        try kernel.launch(
            grid: shape.splitGrid, block: (32, UInt32(shape.warpsPerBlock), 1),
            sharedBytes: UInt32(shape.sharedBytes), stream: stream,
            DecodePagedParams(
                q: query, keyPool: kv.keyPool, valuePool: kv.valuePool, blockTables: kv.blockTables,
                tableStride: Int32(kv.tableStride), blockSize: Int32(kv.blockSize), blockStride: Int64(kv.blockStride),
                tokenStride: Int64(kv.tokenStride), headStride: Int64(kv.headDim), lengths: lengths,
                chunk: Int32(shape.chunk), maxSplits: Int32(workspace.shape.maxSplits), stages: Int32(shape.stages),
                scaleLog2: scale * log2e, partialMax: workspace.maxes.address, partialSum: workspace.sums.address,
                partialAcc: workspace.accs.address, out: shape.needsMergeLaunch ? 0 : output))
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
        let key = Variant(dtype: shape.dtype, headDim: shape.headDim, group: 1)
        guard let kernel = merges[key] else { preconditionFailure("no merge kernel for \(shape)") }
        try kernel.launch(
            grid: (UInt32(shape.qHeads), UInt32(shape.batch), 1),
            block: (UInt32(shape.headDim), shape.maxSplits >= 16 ? 4 : 1, 1), stream: stream,
            DecodeMergeParams(
                partialMax: workspace.maxes.address, partialSum: workspace.sums.address,
                partialAcc: workspace.accs.address, lengths: lengths, chunk: Int32(shape.chunk),
                maxSplits: Int32(workspace.shape.maxSplits), out: output))
    }

    /// Writes `tokens` new K/V rows (`[tokens, kvHeads, headDim]`, bf16 or fp16: a bit copy) to (slots[i],
    /// positions[i]) of the strided cache. slots, positions: int32 `[tokens]` (device).
    public func append(keys: UInt64, values: UInt64, tokens: Int, into keyCache: KVTensorView, _ valueCache: KVTensorView,
                       slots: UInt64, positions: UInt64, kvHeads: Int, headDim: Int, stream: CUDAStream?) throws {
        precondition(headDim % 8 == 0)
        precondition(sameStrides(keyCache, valueCache), "K and V views of one layer share their strides")
        guard tokens > 0 else { return }
        try appendStrided.launch(
            grid: (UInt32(tokens), 1, 1), block: (UInt32(min(256, kvHeads * headDim / 8)), 1, 1), stream: stream,
            KVAppendStridedParams(
                keys: keys, values: values, keyCache: UInt64(keyCache.address), valueCache: UInt64(valueCache.address),
                slotStride: Int64(keyCache.slotStride), tokenStride: Int64(keyCache.tokenStride),
                headStride: Int64(keyCache.headStride),
                slots: slots, positions: positions, kvHeads: Int32(kvHeads), headDim: Int32(headDim)))
    }

    /// Paged twin of `append`: token i goes to position positions[i] of sequence sequences[i] (its block-table row
    /// must already cover the position).
    public func append(keys: UInt64, values: UInt64, tokens: Int, into kv: DevicePagedKV, sequences: UInt64,
                       positions: UInt64, stream: CUDAStream?) throws {
        guard tokens > 0 else { return }
        try appendPaged.launch(
            grid: (UInt32(tokens), 1, 1), block: (UInt32(min(256, kv.kvHeads * kv.headDim / 8)), 1, 1),
            stream: stream,
            KVAppendPagedParams(
                keys: keys, values: values, keyPool: kv.keyPool, valuePool: kv.valuePool, blockTables: kv.blockTables,
                tableStride: Int32(kv.tableStride), blockSize: Int32(kv.blockSize), blockStride: Int64(kv.blockStride),
                tokenStride: Int64(kv.tokenStride), headStride: Int64(kv.headDim), sequences: sequences,
                positions: positions, kvHeads: Int32(kv.kvHeads), headDim: Int32(kv.headDim)))
    }

    /// Device-to-device copy of `bytes` (a multiple of 16) with 16-byte accesses: the bandwidth ceiling.
    public func copy(from source: UInt64, to destination: UInt64, bytes: Int, stream: CUDAStream?) throws {
        precondition(bytes % 16 == 0)
        // Grid-stride: 4 blocks of 512 per SM.
        try copyKernel.launch(
            grid: (UInt32(limits.multiprocessors * 4), 1, 1), block: (512, 1, 1), stream: stream,
            CopyParams(source: source, destination: destination, count: Int64(bytes / 16)))
    }
}

private let log2e: Float = 1.4426950408889634

/// Whether two views of one layer (its K and its V) can share one set of strides in a kernel's parameters.
func sameStrides(_ a: KVTensorView, _ b: KVTensorView) -> Bool {
    a.slotStride == b.slotStride && a.tokenStride == b.tokenStride && a.headStride == b.headStride && a.dtype == b.dtype
}
