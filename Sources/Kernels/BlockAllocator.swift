/// Why a `BlockAllocator` call was refused; the allocator is unchanged after an error.
public enum BlockAllocatorError: Error, Equatable, Sendable {
    case outOfBlocks(requested: Int, available: Int)
    case invalidBlock(Int32)
    case doubleFree(Int32)
}

/// Free list of physical block ids for the paged baseline (vLLM's block
/// manager in miniature). Tracks which ids are free so that a double free,
/// which would later hand one block to two sequences and silently corrupt
/// both, is an error instead.
public struct BlockAllocator: Sendable {
    private var freeList: [Int32]
    private var isFree: [Bool]

    /// All `blockCount` blocks start free; lowest ids are handed out first.
    public init(blockCount: Int) {
        precondition(blockCount >= 0 && blockCount <= Int(Int32.max))
        freeList = (0..<Int32(blockCount)).reversed()
        isFree = [Bool](repeating: true, count: blockCount)
    }

    public var blockCount: Int { isFree.count }
    public var freeCount: Int { freeList.count }

    public func canAllocate(blocks: Int) -> Bool { blocks >= 0 && blocks <= freeList.count }

    /// Takes `blocks` free ids (all or nothing).
    public mutating func allocate(blocks: Int) throws(BlockAllocatorError) -> [Int32] {
        precondition(blocks >= 0)
        guard canAllocate(blocks: blocks) else {
            throw .outOfBlocks(requested: blocks, available: freeList.count)
        }
        let ids = Array(freeList.suffix(blocks).reversed())
        freeList.removeLast(blocks)
        for id in ids { isFree[Int(id)] = false }
        return ids
    }

    /// Returns ids to the free list. Validates every id first (range, not
    /// already free, no duplicates in `ids`), so a bad call frees nothing.
    public mutating func free(_ ids: [Int32]) throws(BlockAllocatorError) {
        var seen = Set<Int32>()
        for id in ids {
            guard id >= 0 && Int(id) < isFree.count else { throw .invalidBlock(id) }
            guard !isFree[Int(id)], seen.insert(id).inserted else { throw .doubleFree(id) }
        }
        for id in ids {
            isFree[Int(id)] = true
            freeList.append(id)
        }
    }
}
