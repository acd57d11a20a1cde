import VAttention
/// Head configuration shared by all kernels. Query head `q` reads KV head
/// `q / group` (consecutive query heads share a KV head, as in GQA models),
/// so each KV head's `group` query heads are served from one pass over K/V.
public struct AttentionShape: Sendable, Equatable {
    public var qHeads: Int
    public var kvHeads: Int
    /// Must be a multiple of 8 (the SIMD width); true for every common model.
    public var headDim: Int

    public init(qHeads: Int, kvHeads: Int, headDim: Int) {
        precondition(kvHeads > 0 && qHeads > 0 && qHeads % kvHeads == 0, "qHeads must be a multiple of kvHeads")
        precondition(headDim > 0 && headDim % 8 == 0, "headDim must be a positive multiple of 8")
        self.qHeads = qHeads
        self.kvHeads = kvHeads
        self.headDim = headDim
    }

    /// Query heads per KV head.
    @inlinable public var group: Int { qHeads / kvHeads }
}

/// Tuning knobs; defaults are what the kernels are tuned for. Tests shrink
/// them to exercise chunk/tile boundaries with short sequences.
public struct AttentionOptions: Sendable {
    /// Decode split-KV chunk (tokens per partial), like flash-decoding's split size.
    public var kvChunk: Int = 256
    /// Prefill: query positions per tile.
    public var queryTile: Int = 16
    /// Prefill: KV tokens per tile.
    public var keyTile: Int = 64
    /// Worker threads (including the caller).
    public var threads: Int = defaultThreadCount
    /// Whose float kernels do the arithmetic (CFloatKernels); must be supported by this CPU.
    public var instructionSet: CPUInstructionSet = .best

    public init(kvChunk: Int = 256, queryTile: Int = 16, keyTile: Int = 64, threads: Int = defaultThreadCount,
                instructionSet: CPUInstructionSet = .best) {
        precondition(kvChunk > 0 && queryTile > 0 && keyTile > 0 && threads > 0)
        precondition(instructionSet.isSupported, "this CPU cannot run \(instructionSet) kernels")
        self.kvChunk = kvChunk
        self.queryTile = queryTile
        self.keyTile = keyTile
        self.threads = threads
        self.instructionSet = instructionSet
    }
}

/// One layer's K (or V) in the paged (vLLM) baseline: a block pool
/// `[numBlocks, blockSize, kvHeads, headDim]` plus, per sequence, a block table
/// mapping logical block i to a physical block id. K and V normally share the
/// same tables (arrays are copy-on-write, so passing them twice costs nothing).
public struct PagedKV: @unchecked Sendable {
    public var pool: UnsafeMutableRawPointer
    public var elementType: KVElementType
    public var numBlocks: Int
    public var blockSize: Int
    public var kvHeads: Int
    public var headDim: Int
    /// `blockTables[s][i]`: physical block holding tokens `i*blockSize ..< (i+1)*blockSize` of sequence `s`.
    public var blockTables: [[Int32]]

    public init(pool: UnsafeMutableRawPointer, elementType: KVElementType, numBlocks: Int,
                blockSize: Int, kvHeads: Int, headDim: Int, blockTables: [[Int32]]) {
        precondition(blockSize > 0 && numBlocks >= 0)
        self.pool = pool
        self.elementType = elementType
        self.numBlocks = numBlocks
        self.blockSize = blockSize
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.blockTables = blockTables
    }

    @inlinable public var strideToken: Int { kvHeads * headDim }
    @inlinable public var strideBlock: Int { blockSize * kvHeads * headDim }
}

// MARK: - Addressing (internal): the only thing contiguous and paged kernels differ in.

/// Where a sequence's tokens live for one K or V tensor. `run(from:)` returns
/// the element offset of token `t` (head 0) and how many tokens starting at `t`
/// follow at `strideToken` spacing, so inner loops stay stride-based and only
/// consult the addressing once per run (once per block when paged).
protocol KVSequenceAddress: Sendable {
    var base: UnsafeMutableRawPointer { get }
    var elementType: KVElementType { get }
    var strideToken: Int { get }
    var strideHead: Int { get }
    func run(from token: Int) -> (offset: Int, count: Int)
}

struct ContiguousAddress: KVSequenceAddress, @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let elementType: KVElementType
    let strideToken: Int
    let strideHead: Int
    let slotOffset: Int

    init(_ kv: KVTensorView, slot: Int) {
        base = UnsafeMutableRawPointer(bitPattern: kv.address)!
        elementType = kv.dtype
        strideToken = kv.tokenStride
        strideHead = kv.headStride
        slotOffset = slot * kv.slotStride
    }

    @inline(__always)
    func run(from token: Int) -> (offset: Int, count: Int) {
        (slotOffset &+ token &* strideToken, Int.max)
    }
}

struct PagedAddress: KVSequenceAddress, @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let elementType: KVElementType
    let strideToken: Int
    let strideHead: Int
    let strideBlock: Int
    let blockSize: Int
    let numBlocks: Int
    let table: [Int32]

    init(_ kv: PagedKV, sequence: Int) {
        precondition(sequence >= 0 && sequence < kv.blockTables.count, "no block table for sequence \(sequence)")
        base = kv.pool
        elementType = kv.elementType
        strideToken = kv.strideToken
        strideHead = kv.headDim
        strideBlock = kv.strideBlock
        blockSize = kv.blockSize
        numBlocks = kv.numBlocks
        table = kv.blockTables[sequence]
    }

    @inline(__always)
    func run(from token: Int) -> (offset: Int, count: Int) {
        let (logical, within) = token.quotientAndRemainder(dividingBy: blockSize)
        precondition(logical < table.count, "token \(token) beyond the sequence's block table")
        let block = Int(table[logical])
        precondition(block >= 0 && block < numBlocks, "block id \(block) out of range")
        return (block &* strideBlock &+ within &* strideToken, blockSize &- within)
    }
}
