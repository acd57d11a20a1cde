import Support

/// How K/V elements are stored. Attention math is float32 whatever it is (softmax sums in float64 on the CPU); the
/// element type only decides memory: the one name for it in every layer (manager, CPU and CUDA kernels, stores).
public enum KVElementType: String, Hashable, Sendable, CaseIterable {
    case fp32, fp16, bf16

    /// Bytes per element; strides are in elements, not bytes.
    @inlinable public var byteCount: Int { self == .fp32 ? 4 : 2 }
}

/// The shape of a model's KV cache and how vAttention lays it out in virtual memory.
public struct KVCacheSpec: Hashable, Sendable, CustomStringConvertible {

    public enum Layout: String, Hashable, Sendable, CaseIterable {
        /// The paper: per layer one K and one V tensor `[slots, maxContext, kvHeads, headDim]` (2·layers tensors).
        case perLayer
        /// One K and one V tensor `[slots, maxContext, layers, kvHeads, headDim]`: a page covers a few tokens of all
        /// layers, so the partly filled last page of a request wastes ~layers× less.
        case mega
    }

    public var layers: Int
    /// KV heads on this tensor-parallel rank.
    public var kvHeads: Int
    public var headDim: Int
    public var dtype: KVElementType
    /// The most requests that can be resident at once (the virtual tensors' batch dimension).
    public var maxSlots: Int
    public var maxContext: Int
    /// Bytes per physical page (a multiple of the backend's granularity).
    public var pageSize: Int
    public var layout: Layout

    public init(layers: Int, kvHeads: Int, headDim: Int, dtype: KVElementType, maxSlots: Int, maxContext: Int,
                pageSize: Int, layout: Layout = .perLayer) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.dtype = dtype
        self.maxSlots = maxSlots
        self.maxContext = maxContext
        self.pageSize = pageSize
        self.layout = layout
    }

    /// Llama-3-8B: 32 layers, 8 KV heads of 128, bf16.
    public static func llama3_8B(maxSlots: Int, maxContext: Int, pageSize: Int = 2 << 20,
                                 layout: Layout = .perLayer) -> KVCacheSpec {
        KVCacheSpec(layers: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxSlots: maxSlots, maxContext: maxContext,
                    pageSize: pageSize, layout: layout)
    }

    /// Number of virtual tensors: 2·layers (per layer) or 2 (mega).
    public var tensorCount: Int { layout == .perLayer ? 2 * layers : 2 }
    /// Bytes one token occupies in one virtual tensor.
    public var tokenBytesPerTensor: Int {
        (layout == .perLayer ? 1 : layers) * kvHeads * headDim * dtype.byteCount
    }
    /// Bytes one token occupies across the whole cache (all layers, K and V).
    public var tokenBytes: Int { 2 * layers * kvHeads * headDim * dtype.byteCount }
    /// Bytes of one slot's region in one tensor, rounded up to whole pages so slots never share a page.
    public var slotBytes: Int { roundUp(maxContext * tokenBytesPerTensor, to: pageSize) }
    public var tensorBytes: Int { slotBytes * maxSlots }
    public var reservedBytes: Int { tensorBytes * tensorCount }
    /// Pages one tensor needs to hold `tokens` tokens of one slot.
    public func pagesPerTensor(tokens: Int) -> Int { (tokens * tokenBytesPerTensor + pageSize - 1) / pageSize }
    public var maxPagesPerTensor: Int { slotBytes / pageSize }

    public var description: String {
        "\(layers) layers × \(kvHeads) KV heads × d\(headDim) \(dtype.rawValue), \(maxSlots) slots × \(maxContext) tokens, "
            + "\(layout.rawValue) layout, \(formatBytes(pageSize)) pages"
    }
}

@inline(__always) func roundUp(_ x: Int, to m: Int) -> Int { (x + m - 1) / m * m }

/// Where a kernel finds one layer's K or V: element (slot, token, head, d) is at
/// `address + (slot·slotStride + token·tokenStride + head·headStride + d) · dtype.byteCount` (strides in elements,
/// d contiguous). The one strided view of the code base: the manager hands it out, the CPU kernels read host memory
/// through it, the CUDA kernels device memory; both layouts are only different strides.
public struct KVTensorView: Hashable, Sendable {
    public let address: UInt
    public let slotStride: Int
    public let tokenStride: Int
    public let headStride: Int
    public let dtype: KVElementType

    public init(address: UInt, slotStride: Int, tokenStride: Int, headStride: Int, dtype: KVElementType) {
        self.address = address
        self.slotStride = slotStride
        self.tokenStride = tokenStride
        self.headStride = headStride
        self.dtype = dtype
    }

    /// Layer `layer` of `layers` in `layout`, in a tensor at `tensorBase` (per-layer: that layer's own tensor; mega:
    /// the one tensor of all layers) whose slots are `slotStride` elements apart. The only place strides are derived.
    public static func layer(_ layer: Int, of layers: Int, layout: KVCacheSpec.Layout, tensorBase: UInt, kvHeads: Int,
                             headDim: Int, slotStride: Int, dtype: KVElementType) -> KVTensorView {
        precondition(layer >= 0 && layer < layers, "layer \(layer) out of range")
        switch layout {
        case .perLayer:
            return KVTensorView(address: tensorBase, slotStride: slotStride, tokenStride: kvHeads * headDim,
                                headStride: headDim, dtype: dtype)
        case .mega:
            return KVTensorView(address: tensorBase + UInt(layer * kvHeads * headDim * dtype.byteCount),
                                slotStride: slotStride, tokenStride: layers * kvHeads * headDim, headStride: headDim,
                                dtype: dtype)
        }
    }

    /// A dense per-layer tensor `[slots, maxContext, kvHeads, headDim]` at `address` (tests, checks).
    public static func perLayer(address: UInt, dtype: KVElementType, maxContext: Int, kvHeads: Int,
                                headDim: Int) -> KVTensorView {
        .layer(0, of: 1, layout: .perLayer, tensorBase: address, kvHeads: kvHeads, headDim: headDim,
               slotStride: maxContext * kvHeads * headDim, dtype: dtype)
    }

    /// Layer `layer` of a dense mega tensor `[slots, maxContext, layers, kvHeads, headDim]` at `address`.
    public static func mega(address: UInt, dtype: KVElementType, layer: Int, layers: Int, maxContext: Int,
                            kvHeads: Int, headDim: Int) -> KVTensorView {
        .layer(layer, of: layers, layout: .mega, tensorBase: address, kvHeads: kvHeads, headDim: headDim,
               slotStride: maxContext * layers * kvHeads * headDim, dtype: dtype)
    }

    /// Byte address of element (slot, token, head, d).
    @inlinable
    public func byteAddress(slot: Int, token: Int, head: Int = 0, dim: Int = 0) -> UInt {
        address + UInt((slot * slotStride + token * tokenStride + head * headStride + dim) * dtype.byteCount)
    }
}

public enum KVKind: Int, Sendable, CaseIterable {
    case key = 0, value = 1
}

/// What went wrong in a `KVCacheManager` call. The manager's state is unchanged whenever one is thrown, except for
/// `.backend` (a driver failure), after which the state is still consistent (invariants hold).
public enum KVCacheError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidSpec(String)
    case budgetTooSmall(budget: Int, minimum: Int)
    case unknownSlot(Int)
    case slotNotActive(Int)
    case lengthOutOfRange(slot: Int, length: Int, maxContext: Int)
    case noFreeSlot
    case outOfPages(needed: Int, available: Int)
    case duplicateSlotInStep(Int)
    case shutDown
    case backend(String)

    public var description: String {
        switch self {
        case .invalidSpec(let why): return "invalid KV cache spec: \(why)"
        case .budgetTooSmall(let b, let m):
            return "memory budget \(formatBytes(b)) is smaller than one page per tensor (\(formatBytes(m)))"
        case .unknownSlot(let s): return "slot \(s) does not exist"
        case .slotNotActive(let s): return "slot \(s) is not allocated (freed twice, or never allocated)"
        case .lengthOutOfRange(let s, let l, let m): return "slot \(s): length \(l) outside 0...\(m) (max context)"
        case .noFreeSlot: return "all slots are in use"
        case .outOfPages(let n, let a): return "out of KV pages: need \(n), can free at most \(a)"
        case .duplicateSlotInStep(let s): return "slot \(s) appears twice in one step"
        case .shutDown: return "the KV cache manager has been shut down"
        case .backend(let e): return "memory backend failed: \(e)"
        }
    }
}
