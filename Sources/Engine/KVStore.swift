import CUDADriver
import Kernels
import VAttention

/// The scheduler's side of a KV store: slots, lengths, capacity. No K/V data passes through it.
public protocol KVAllocator: AnyObject {
    var name: String { get }
    /// A new request of `tokens` tokens fits now (a free slot and memory for it).
    func canAdmit(tokens: Int) -> Bool
    func allocateSlot(expectedLength: Int) throws -> Int
    /// Backs every listed slot up to its length before the step; throws `KVOutOfMemory` (state unchanged).
    func reserve(_ lengths: [(slot: Int, length: Int)]) throws
    /// Whether memory is mapped as sequences grow (so admitting a request a step ahead hides its mapping).
    var mapsOnDemand: Bool { get }
    /// Asks for `tokens` of `slot` to be backed ahead of time, in the background (vAttention: the mapper maps a
    /// prompt admitted now while this step computes). Only called where `mapsOnDemand`.
    func mapAhead(_ slot: Int, tokens: Int) throws
    func free(_ slot: Int) throws
    /// The longest sequence a slot can hold.
    var maxContext: Int { get }
    /// The longest sequence one request can reach with the whole pool to itself (every other slot idle): a request
    /// that would grow past it can never run, whatever `maxContext` says. A pool smaller than `maxContext` × 1
    /// request is a configuration the engine must refuse prompts for and end requests at.
    var capacityTokens: Int { get }
    var slotCount: Int { get }
    var memory: KVMemoryReport { get }
}

/// Where the engine keeps K/V: the vAttention manager (contiguous virtual tensors) or the paged baseline (block
/// tables). The scheduler sees the allocator; a model reaches a layer's K/V through its `binding` — the kernels are
/// the model's, the store only says where the data is.
public protocol KVStore: KVAllocator {
    /// Host memory for the CPU model, device memory for the CUDA model (`LLMEngine` refuses a mismatch).
    var location: MemoryLocation { get }
    func binding(layer: Int) -> KVLayerBinding
}

/// How a model reaches one layer's K and V.
public enum KVLayerBinding {
    /// vAttention: K and V as strided tensors `[slot, token, head, dim]` (both layouts are only strides).
    case strided(keys: KVTensorView, values: KVTensorView)
    /// The paged baseline: K and V block pools with one block table per slot.
    case paged(PagedKVBinding)
}

/// One layer of a paged store: pool addresses `[blocks, blockSize, kvHeads, headDim]` and the slots' block tables.
public struct PagedKVBinding {
    public let keys: UInt
    public let values: UInt
    public let elementType: KVElementType
    public let blockCount: Int
    public let blockSize: Int
    public let kvHeads: Int
    public let headDim: Int
    /// Width of a block-table row covering the store's context.
    public let tableStride: Int
    let store: PagedKVStore

    /// The physical blocks of a slot, in order.
    public func blockTable(slot: Int) -> [Int32] { store.blockTable(slot: slot) }
}

/// Not enough KV memory for a step: the scheduler preempts a request and retries.
public struct KVOutOfMemory: Error, CustomStringConvertible {
    public let detail: String
    public var description: String { "out of KV memory: \(detail)" }
}

/// vAttention: K/V in a `KVCacheManager`'s virtual tensors; kernels get base addresses and strides.
public final class VAttentionKVStore: KVStore {
    public let manager: KVCacheManager
    public let name = "vattention"

    public init(manager: KVCacheManager) { self.manager = manager }

    public var location: MemoryLocation { manager.backend.location }
    public func binding(layer: Int) -> KVLayerBinding {
        .strided(keys: manager.view(layer: layer, .key), values: manager.view(layer: layer, .value))
    }

    public var maxContext: Int { manager.spec.maxContext }
    public var slotCount: Int { manager.spec.maxSlots }
    public var capacityTokens: Int {
        let spec = manager.spec
        return (manager.totalPages / spec.tensorCount) * spec.pageSize / spec.tokenBytesPerTensor
    }
    public func canAdmit(tokens: Int) -> Bool { manager.canAdmit(tokens: tokens) }
    public func allocateSlot(expectedLength: Int) throws -> Int {
        try manager.allocateSlot(expectedLength: min(expectedLength, manager.spec.maxContext))
    }
    public func reserve(_ lengths: [(slot: Int, length: Int)]) throws {
        do { try manager.step(lengths) } catch let e as KVCacheError {
            if case .outOfPages = e { throw KVOutOfMemory(detail: e.description) }
            throw e
        }
    }
    public func free(_ slot: Int) throws { try manager.free(slot) }
    public var mapsOnDemand: Bool { true }
    public func mapAhead(_ slot: Int, tokens: Int) throws {
        try manager.mapAhead(slot, tokens: min(tokens, manager.spec.maxContext))
    }
    public var memory: KVMemoryReport { manager.stats.memory }
}

/// The paged baseline (vLLM layout): per layer a K and a V block pool `[blocks, blockSize, kvHeads, headDim]`, a
/// block table per slot, blocks from a `BlockAllocator`. Memory is allocated up front (as PagedAttention does), in
/// host memory (the CPU model) or device memory (`device:`, the CUDA model).
public final class PagedKVStore: KVStore {
    public let name: String
    public let layers: Int, kvHeads: Int, headDim: Int, blockSize: Int, maxContext: Int, slotCount: Int
    public let elementType: KVElementType
    private var allocator: BlockAllocator
    private var tables: [[Int32]]
    private var lengths: [Int]
    private var active: [Bool]
    private let kPools: [UnsafeMutableRawPointer]
    private let vPools: [UnsafeMutableRawPointer]
    private let deviceK: [DeviceBuffer]
    private let deviceV: [DeviceBuffer]
    private let blockBytes: Int

    /// Host pools, for the CPU model.
    public convenience init(layers: Int, kvHeads: Int, headDim: Int, elementType: KVElementType, slots: Int,
                            maxContext: Int, blockSize: Int, memoryBudget: Int) {
        let bytes = blockSize * kvHeads * headDim * elementType.byteCount
        let blocks = max(1, memoryBudget / (bytes * 2 * layers))
        func pool() -> [UnsafeMutableRawPointer] {
            (0..<layers).map { _ in UnsafeMutableRawPointer.allocate(byteCount: blocks * bytes, alignment: 64) }
        }
        self.init(layers: layers, kvHeads: kvHeads, headDim: headDim, elementType: elementType, slots: slots,
                  maxContext: maxContext, blockSize: blockSize, blocks: blocks, host: (pool(), pool()), device: ([], []))
    }

    /// Device pools (cuMemAlloc), for the CUDA model.
    public convenience init(layers: Int, kvHeads: Int, headDim: Int, elementType: KVElementType, slots: Int,
                            maxContext: Int, blockSize: Int, memoryBudget: Int, device: CUDA) throws {
        let bytes = blockSize * kvHeads * headDim * elementType.byteCount
        let blocks = max(1, memoryBudget / (bytes * 2 * layers))
        func pool() throws -> [DeviceBuffer] {
            try (0..<layers).map { _ in try DeviceBuffer(device, byteCount: blocks * bytes) }
        }
        self.init(layers: layers, kvHeads: kvHeads, headDim: headDim, elementType: elementType, slots: slots,
                  maxContext: maxContext, blockSize: blockSize, blocks: blocks, host: ([], []),
                  device: (try pool(), try pool()))
    }

    private init(layers: Int, kvHeads: Int, headDim: Int, elementType: KVElementType, slots: Int, maxContext: Int,
                 blockSize: Int, blocks: Int, host: ([UnsafeMutableRawPointer], [UnsafeMutableRawPointer]),
                 device: ([DeviceBuffer], [DeviceBuffer])) {
        self.layers = layers; self.kvHeads = kvHeads; self.headDim = headDim; self.elementType = elementType
        self.slotCount = slots; self.maxContext = maxContext; self.blockSize = blockSize
        name = "paged(\(blockSize))"
        blockBytes = blockSize * kvHeads * headDim * elementType.byteCount
        allocator = BlockAllocator(blockCount: blocks)
        tables = Array(repeating: [], count: slots)
        lengths = Array(repeating: 0, count: slots)
        active = Array(repeating: false, count: slots)
        (kPools, vPools) = host
        (deviceK, deviceV) = device
    }

    public var capacityTokens: Int { allocator.blockCount * blockSize }

    public var location: MemoryLocation { deviceK.isEmpty ? .host : .device }
    public func binding(layer: Int) -> KVLayerBinding {
        let (k, v) = deviceK.isEmpty ? (UInt(bitPattern: kPools[layer]), UInt(bitPattern: vPools[layer]))
                                     : (UInt(deviceK[layer].address), UInt(deviceV[layer].address))
        return .paged(PagedKVBinding(keys: k, values: v, elementType: elementType, blockCount: allocator.blockCount,
                                     blockSize: blockSize, kvHeads: kvHeads, headDim: headDim,
                                     tableStride: tableStride, store: self))
    }
    /// Width of a block-table row covering `maxContext`.
    public var tableStride: Int { blocks(for: maxContext) }
    /// The physical blocks of a slot, in order.
    public func blockTable(slot: Int) -> [Int32] { tables[slot] }

    deinit {
        for p in kPools + vPools { p.deallocate() }
    }

    private func blocks(for tokens: Int) -> Int { (tokens + blockSize - 1) / blockSize }

    public func canAdmit(tokens: Int) -> Bool {
        active.contains(false) && allocator.canAllocate(blocks: blocks(for: tokens))
    }

    public func allocateSlot(expectedLength: Int) throws -> Int {
        guard let slot = active.firstIndex(of: false) else { throw KVOutOfMemory(detail: "no free slot") }
        active[slot] = true
        lengths[slot] = 0
        return slot
    }

    public func reserve(_ lengths: [(slot: Int, length: Int)]) throws {
        let needed = lengths.reduce(0) { $0 + max(0, blocks(for: $1.length) - tables[$1.slot].count) }
        guard allocator.canAllocate(blocks: needed) else {
            throw KVOutOfMemory(detail: "need \(needed) blocks, \(allocator.freeCount) free")
        }
        for (slot, length) in lengths {
            let missing = blocks(for: length) - tables[slot].count
            if missing > 0 { tables[slot] += try allocator.allocate(blocks: missing) }
            self.lengths[slot] = length
        }
    }

    /// Blocks are taken at `reserve`: nothing is mapped ahead.
    public var mapsOnDemand: Bool { false }
    public func mapAhead(_ slot: Int, tokens: Int) throws {}

    public func free(_ slot: Int) throws {
        precondition(active[slot], "slot \(slot) freed twice")
        try allocator.free(tables[slot])
        tables[slot] = []
        lengths[slot] = 0
        active[slot] = false
    }

    public var memory: KVMemoryReport {
        let mapped = (allocator.blockCount - allocator.freeCount) * blockBytes * 2 * layers
        let used = lengths.reduce(0, +) * kvHeads * headDim * elementType.byteCount * 2 * layers
        return KVMemoryReport(reservedBytes: allocator.blockCount * blockBytes * 2 * layers, mappedBytes: mapped,
                              usedBytes: used, capacityBytes: allocator.blockCount * blockBytes * 2 * layers,
                              activeSlots: active.filter { $0 }.count)
    }
}
