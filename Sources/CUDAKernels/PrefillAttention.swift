import CKernelParams
import CUDADriver
import VAttention


/// Where a launch finds K and V. Strides are in elements; token `t`, KV head `h`, dim `d` of K is at
/// `keys + (tokenOffset(t) + h·headStride + d) · 2` bytes.
public enum PrefillKV: Sendable {
    /// vAttention: the slot's tokens at a fixed stride. `keys`/`values` point at token 0 of the slot
    /// (`KVTensorView.byteAddress(slot:token: 0)`), so both KVCacheManager layouts are just strides.
    case contiguous(keys: UInt64, values: UInt64, tokenStride: Int, headStride: Int)
    /// vLLM layout: pools `[numBlocks, blockSize, kvHeads, headDim]`, `table` an int32 device array mapping the
    /// sequence's logical block i to a physical block; `blockSize` a power of two.
    case paged(keys: UInt64, values: UInt64, table: UInt64, blockSize: Int)
}

/// A compiled tile configuration: `warps` warps per block, each owning `rowTiles`×16 query rows; K/V stream through
/// shared memory `keyTile` tokens at a time through a `stages`-deep cp.async ring. `PrefillConfig.wgmma` is the Hopper
/// kernel: two warpgroups on warpgroup MMA (wgmma), 128 rows, 64-token tiles, 2 stages.
public struct PrefillConfig: Hashable, Sendable, CustomStringConvertible {
    public var warps: Int
    public var rowTiles: Int
    public var keyTile: Int
    public var stages: Int
    /// Warpgroup MMA (sm_90a) instead of mma.sync.
    public private(set) var isWGMMA = false
    public init(_ warps: Int, _ rowTiles: Int, _ keyTile: Int, _ stages: Int) {
        self.warps = warps; self.rowTiles = rowTiles; self.keyTile = keyTile; self.stages = stages
    }
    /// The warpgroup-MMA kernel (sm_90a).
    public static let wgmma: PrefillConfig = {
        var c = PrefillConfig(8, 1, 64, 2)
        c.isWGMMA = true
        return c
    }()
    public var rowsPerBlock: Int { 16 * warps * rowTiles }
    public var description: String { isWGMMA ? "wg2n64" : "w\(warps)m\(rowTiles)n\(keyTile)s\(stages)" }
    /// Q tile + `stages` K and V tiles (+ 1 KB to align the wgmma kernel's tiles to 1024 bytes).
    public func sharedBytes(headDim: Int) -> Int {
        (rowsPerBlock + 2 * stages * keyTile) * headDim * 2 + (isWGMMA ? 1024 : 0)
    }
}

/// The FlashAttention-2-style causal prefill kernels of `cuda/prefill_attention.cu`, compiled once for the device.
/// Every configuration's kernel is loaded at init; each takes one `PrefillParams` (`kernel_params.h`).
public final class PrefillAttentionKernels: @unchecked Sendable {
    public let module: CUDAModule
    private let kernels: [String: CUDAKernel<PrefillParams>]
    public static let headDims = [64, 128]
    /// The device runs the warpgroup-MMA kernels (compute capability 9.0: compiled for sm_90a).
    public let hopper: Bool
    /// The device's limits (a configuration above the default per-block shared memory opts in).
    public let limits: CUDADeviceLimits

    static let file = "prefill_attention.cu"

    /// Every kernel the launcher loads on a device (`hopper`: with the wgmma ones), with its parameter struct.
    public static func signatures(hopper: Bool) -> [KernelSignature] {
        KVElementType.cudaAttentionTypes.flatMap { dtype in
            headDims.flatMap { d in
                [false, true].flatMap { paged in
                    configs(dtype: dtype, headDim: d, hopper: hopper).map { config in
                        KernelSignature(file: file, name: kernelName(dtype: dtype, headDim: d, config: config,
                                                                     paged: paged),
                                        PrefillParams.self)
                    }
                }
            }
        }
    }

    public convenience init(device: CUDADevice, compiler: NVRTC) throws {
        let architecture = try device.architecture()
        let hopper = architecture == "sm_90"
        try self.init(module: try loadKernelModule(Self.file, device: device, compiler: compiler,
                                                   architecture: hopper ? "sm_90a" : architecture),
                      hopper: hopper, limits: try device.limits())
    }

    /// Loads every configuration's kernel of `module` once (a missing one throws naming it); those above the
    /// default per-block shared memory opt in to what they use.
    init(module: CUDAModule, hopper: Bool, limits: CUDADeviceLimits) throws {
        self.module = module
        self.hopper = hopper
        self.limits = limits
        var kernels: [String: CUDAKernel<PrefillParams>] = [:]
        for dtype in KVElementType.cudaAttentionTypes {
            for d in Self.headDims {
                for paged in [false, true] {
                    for config in Self.configs(dtype: dtype, headDim: d, hopper: hopper) {
                        let name = Self.kernelName(dtype: dtype, headDim: d, config: config, paged: paged)
                        let k = try module.kernel(KernelSignature(file: Self.file, name: name, PrefillParams.self),
                                                  PrefillParams.self)
                        let bytes = config.sharedBytes(headDim: d)
                        if bytes > limits.sharedMemoryPerBlock { try k.function.setMaxDynamicSharedMemory(bytes) }
                        kernels[name] = k
                    }
                }
            }
        }
        self.kernels = kernels
    }

    /// Tile configurations compiled for a dtype and head dim on this device (must match the instantiations in the
    /// .cu file); the first is the default.
    public func configs(dtype: KVElementType, headDim: Int) -> [PrefillConfig] {
        Self.configs(dtype: dtype, headDim: headDim, hopper: hopper)
    }

    static func configs(dtype: KVElementType, headDim: Int, hopper: Bool) -> [PrefillConfig] {
        (hopper ? [.wgmma] : []) + mmaConfigs(dtype: dtype, headDim: headDim)
    }

    /// The mma.sync configurations (any architecture from sm_80).
    public static func mmaConfigs(dtype: KVElementType, headDim: Int) -> [PrefillConfig] {
        switch (dtype, headDim) {
        case (.bf16, 128):
            // w4m2n64s2 first. Why: docs/decisions/007-prefill-tile-configs.md
            return [PrefillConfig(4, 2, 64, 2), PrefillConfig(4, 2, 32, 3), PrefillConfig(4, 2, 32, 2),
                    PrefillConfig(8, 2, 32, 3), PrefillConfig(4, 1, 64, 2)]
        case (.fp16, 128):
            return [PrefillConfig(4, 2, 32, 3), PrefillConfig(4, 1, 64, 2)]
        default:
            return [PrefillConfig(4, 2, 64, 2), PrefillConfig(4, 1, 64, 2)]
        }
    }

    public static func kernelName(dtype: KVElementType, headDim: Int, config: PrefillConfig, paged: Bool) -> String {
        "prefill_\(dtype.rawValue)_d\(headDim)_\(config)_\(paged ? "paged" : "contig")"
    }

    /// Queues causal prefill of one chunk: `query`/`output` are `[chunkLength, qHeads, headDim]` device arrays; query
    /// row i is position `offset + i` and attends to K/V positions `0...offset + i` (already in the cache).
    public func launch(query: UInt64, output: UInt64, kv: PrefillKV, chunkLength: Int, offset: Int,
                       qHeads: Int, kvHeads: Int, headDim: Int, dtype: KVElementType, scale: Float,
                       config: PrefillConfig? = nil, stream: CUDAStream?) throws {
        precondition(KVElementType.cudaAttentionTypes.contains(dtype), "the CUDA attention kernels take bf16 or fp16")
        let config = config ?? configs(dtype: dtype, headDim: headDim)[0]
        precondition(Self.headDims.contains(headDim), "head dim \(headDim) not compiled (64, 128)")
        precondition(qHeads > 0 && kvHeads > 0 && qHeads % kvHeads == 0, "qHeads must be a multiple of kvHeads")
        precondition(offset >= 0 && chunkLength >= 0)
        guard chunkLength > 0 else { return }
        let paged: Bool
        let keys: UInt64, values: UInt64, table: UInt64, tokenStride: Int, headStride: Int, blockSize: Int
        switch kv {
        case let .contiguous(k, v, ts, hs):
            paged = false; keys = k; values = v; table = 0; tokenStride = ts; headStride = hs; blockSize = 0
        case let .paged(k, v, t, bs):
            precondition(bs > 0 && bs & (bs - 1) == 0, "block size must be a power of two")
            paged = true; keys = k; values = v; table = t
            tokenStride = kvHeads * headDim; headStride = headDim; blockSize = bs
        }
        let name = Self.kernelName(dtype: dtype, headDim: headDim, config: config, paged: paged)
        guard let kernel = kernels[name] else { preconditionFailure("kernel \(name) not compiled") }
        let rows = config.rowsPerBlock
        let tiles = (chunkLength + rows - 1) / rows
        let log2e: Float = 1.4426950408889634
        try kernel.launch(
            grid: (UInt32(qHeads), UInt32(tiles), 1), block: (UInt32(32 * config.warps), 1, 1),
            sharedBytes: UInt32(config.sharedBytes(headDim: headDim)), stream: stream,
            PrefillParams(
                q: query, out: output, keys: keys, values: values, table: table, n: Int32(chunkLength),
                offset: Int32(offset), qHeads: Int32(qHeads), kvHeads: Int32(kvHeads), scaleLog2: scale * log2e,
                tokenStride: Int64(tokenStride), headStride: Int64(headStride), blockSize: Int32(blockSize)))
    }
}
