import CUDADriver
import CUDAKernels
import Randomness
import VAttention

/// Where the K/V of a GPU attention test or benchmark lives.
enum KVStorage: Hashable, CustomStringConvertible {
    /// A `KVCacheManager` on the CUDA backend with this layout (vAttention: contiguous virtual tensors).
    case manager(KVCacheSpec.Layout)
    /// A vLLM-style block pool with this block size, block ids shuffled.
    case paged(Int)

    var description: String {
        switch self {
        case .manager(let l): return "contiguous-\(l.rawValue)"
        case .paged(let b): return "paged-\(b)"
        }
    }

    static let all: [KVStorage] = [.manager(.perLayer), .manager(.mega), .paged(16), .paged(256)]
}

/// `layers` layers of K/V for `lengths.count` sequences filled through the GPU append kernels from a device buffer of
/// `sourceTokens` random rows (token t of the fill takes row t mod sourceTokens), in one `KVStorage`.
final class DecodeKV {
    let storage: KVStorage
    let layers: Int
    let kvHeads: Int
    let headDim: Int
    let lengths: [Int]
    /// Per sequence, the slot (manager) — the sequence index for paged storage.
    private(set) var slots: [Int] = []
    private var manager: KVCacheManager?
    private var pools: [DeviceBuffer] = []      // paged: K0, V0, K1, V1, …
    private var table: DeviceBuffer?
    private(set) var tableStride = 0
    let slotsBuffer: DeviceBuffer
    let lengthsBuffer: DeviceBuffer

    init(storage: KVStorage, layers: Int, kvHeads: Int, headDim: Int, dtype: KVElementType, lengths: [Int],
         maxLength: Int, handle: BackendHandle, kernels: DecodeAttentionKernels, sourceK: DeviceBuffer,
         sourceV: DeviceBuffer, sourceTokens: Int, rng: inout SplitMix64) throws {
        self.storage = storage
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.lengths = lengths
        let cuda = handle.device!.cuda, stream = handle.stream!
        let batch = lengths.count
        switch storage {
        case .manager(let layout):
            // A few spare slots so that the slots used are not simply 0..<batch.
            let spare = min(3, batch)
            let spec = KVCacheSpec(layers: layers, kvHeads: kvHeads, headDim: headDim, dtype: dtype,
                                   maxSlots: batch + spare, maxContext: maxLength, pageSize: 2 << 20, layout: layout)
            let budget = spec.tensorCount * spec.maxPagesPerTensor * batch * spec.pageSize
            let m = try KVCacheManager(spec: spec, backend: handle.backend, memoryBudget: budget,
                                       policy: MapAheadPolicy(background: false, lookAheadTokens: 0))
            var taken = try (0..<(batch + spare)).map { _ in try m.allocateSlot(expectedLength: 0) }
            taken.shuffle(using: &rng)
            for s in taken[batch...] { try m.free(s) }
            slots = Array(taken[..<batch])
            _ = try m.step(zip(slots, lengths).map { ($0, $1) })
            manager = m
        case .paged(let blockSize):
            tableStride = (maxLength + blockSize - 1) / blockSize
            let blocksPer = lengths.map { ($0 + blockSize - 1) / blockSize }
            let numBlocks = max(1, blocksPer.reduce(0, +))
            var ids = (0..<numBlocks).map { Int32($0) }
            ids.shuffle(using: &rng)
            var rows = [Int32](repeating: 0, count: batch * tableStride)
            var next = 0
            for s in 0..<batch {
                for i in 0..<blocksPer[s] { rows[s * tableStride + i] = ids[next]; next += 1 }
            }
            let t = try DeviceBuffer(cuda, byteCount: rows.count * 4)
            try t.upload(rows)
            table = t
            let poolBytes = numBlocks * blockSize * kvHeads * headDim * 2
            pools = try (0..<(2 * layers)).map { _ in try DeviceBuffer(cuda, byteCount: poolBytes) }
            slots = Array(0..<batch)
        }
        slotsBuffer = try DeviceBuffer(cuda, byteCount: batch * 4)
        try slotsBuffer.upload(slots.map { Int32($0) })
        lengthsBuffer = try DeviceBuffer(cuda, byteCount: batch * 4)
        try lengthsBuffer.upload(lengths.map { Int32($0) })

        // Fill: per layer, all tokens of all sequences, in launches of at most `sourceTokens` tokens.
        var seqOf: [Int32] = [], slotOf: [Int32] = [], posOf: [Int32] = []
        for (s, n) in lengths.enumerated() {
            for p in 0..<n { seqOf.append(Int32(s)); slotOf.append(Int32(slots[s])); posOf.append(Int32(p)) }
        }
        let total = posOf.count
        guard total > 0 else { return }
        let seqBuffer = try DeviceBuffer(cuda, byteCount: total * 4), slotBuffer = try DeviceBuffer(cuda, byteCount: total * 4)
        let posBuffer = try DeviceBuffer(cuda, byteCount: total * 4)
        try seqBuffer.upload(seqOf)
        try slotBuffer.upload(slotOf)
        try posBuffer.upload(posOf)
        for layer in 0..<layers {
            var start = 0
            while start < total {
                let n = min(sourceTokens, total - start)
                let off = UInt64(start * 4)
                switch storage {
                case .manager:
                    let (k, v) = views(layer: layer)
                    try kernels.append(keys: sourceK.address, values: sourceV.address, tokens: n, into: k, v,
                                       slots: slotBuffer.address + off,
                                       positions: posBuffer.address + off, kvHeads: kvHeads, headDim: headDim,
                                       stream: stream)
                case .paged:
                    try kernels.append(keys: sourceK.address, values: sourceV.address, tokens: n,
                                       into: paged(layer: layer), sequences: seqBuffer.address + off,
                                       positions: posBuffer.address + off, stream: stream)
                }
                start += n
            }
        }
        try stream.synchronize()
    }

    /// A layer's K and V views (manager storage).
    func views(layer: Int) -> (keys: KVTensorView, values: KVTensorView) {
        (manager!.view(layer: layer, .key), manager!.view(layer: layer, .value))
    }

    func paged(layer: Int) -> DevicePagedKV {
        guard case .paged(let blockSize) = storage else { preconditionFailure("not paged") }
        return DevicePagedKV(keyPool: pools[2 * layer].address, valuePool: pools[2 * layer + 1].address,
                             blockTables: table!.address, tableStride: tableStride, blockSize: blockSize,
                             kvHeads: kvHeads, headDim: headDim)
    }

    /// One decode call on `layer`.
    func decode(_ kernels: DecodeAttentionKernels, layer: Int, query: UInt64, output: UInt64, shape: DecodeShape,
                workspace: DecodeWorkspace, scale: Float, stream: CUDAStream) throws {
        switch storage {
        case .manager:
            let (k, v) = views(layer: layer)
            try kernels.decode(query: query, keys: k, values: v, slots: slotsBuffer.address,
                               lengths: lengthsBuffer.address, output: output, shape: shape, workspace: workspace,
                               scale: scale, stream: stream)
        case .paged:
            try kernels.decode(query: query, kv: paged(layer: layer), lengths: lengthsBuffer.address, output: output,
                               shape: shape, workspace: workspace, scale: scale, stream: stream)
        }
    }

    func close(stream: CUDAStream) throws {
        try stream.synchronize()
        if let m = manager {
            for s in slots { try m.free(s) }
            try m.shutdown()
        }
        manager = nil
        pools = []
        table = nil
    }
}

/// Random values in [-amplitude, amplitude) as bf16/fp16 bit patterns, and the same values as float32 after rounding.
func randomHalfs(_ count: Int, dtype: KVElementType, amplitude: Float, rng: inout SplitMix64) -> (bits: [UInt16], values: [Float]) {
    var bits = [UInt16](repeating: 0, count: count), values = [Float](repeating: 0, count: count)
    for i in 0..<count {
        let x = rng.nextSignedUnitFloat() * amplitude
        switch dtype {
        case .bf16:
            let b = UInt16(truncatingIfNeeded: (x.bitPattern &+ 0x7FFF &+ ((x.bitPattern >> 16) & 1)) >> 16)
            bits[i] = b
            values[i] = Float(bitPattern: UInt32(b) << 16)
        case .fp16:
            let h = Float16(x)
            bits[i] = h.bitPattern
            values[i] = Float(h)
        case .fp32:
            preconditionFailure("16-bit element types only")
        }
    }
    return (bits, values)
}

func halfToFloat(_ bits: UInt16, _ dtype: KVElementType) -> Float {
    dtype == .bf16 ? Float(bitPattern: UInt32(bits) << 16) : Float(Float16(bitPattern: bits))
}
