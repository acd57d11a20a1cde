import Model

/// Everything the CUDA forward pass reads about one step besides weights and K/V, packed into one array of 32-bit
/// words for one upload: tokens, positions, per-token owner (slot, or sequence for block tables), decode slots and
/// lengths, the rows that want logits, sampling parameters, block tables. Pure data, built on the CPU and tested
/// there (`StepMetadataTests`): the rules for row order, padding and bucketing live here and nowhere else.
///
/// Rows: decode chunks first (one contiguous query block for the batched decode kernel), then prompt chunks, each
/// in the caller's order. Decode-only steps are padded to the next power of two lanes (at most `maxRows`) — graphs
/// or not, so a graph replay computes exactly what plain launches compute (same GEMM shapes, same rounding); a
/// padded lane has position −1 (RoPE/append skip it) and length 0 (attention writes zeros).
public struct StepMetadata: Equatable {
    /// Block tables for a paged store: a row of `stride` entries per sequence.
    public struct BlockTables {
        public var stride: Int
        public var table: (_ slot: Int) -> [Int32]
        public init(stride: Int, table: @escaping (_ slot: Int) -> [Int32]) {
            self.stride = stride
            self.table = table
        }
    }

    /// Where each array starts in `words`, in words.
    public struct Offsets: Equatable {
        public var tokens = 0, positions = 0, owners = 0, decodeSlots = 0, decodeLengths = 0, wanted = 0
        public var samplingParameters = 0, blockTables = 0
    }

    /// Chunk indices in row order: decodes first, then prompt chunks.
    public private(set) var order: [Int] = []
    /// First row of each chunk (caller's order).
    public private(set) var rowOfChunk: [Int] = []
    /// Rows (tokens) computed, padding included.
    public private(set) var tokens = 0
    /// Decode lanes, padding included.
    public private(set) var decodes = 0
    /// Whether every chunk is a decode that wants logits (a step a CUDA graph can replay).
    public private(set) var decodeOnly = false
    /// Logits rows computed (padding included) and those the caller asked for (the first `realRows`).
    public private(set) var logitRows = 0
    public private(set) var realRows = 0
    /// The longest decode sequence this step (0 without decodes).
    public private(set) var maxDecodeLength = 0
    public private(set) var offsets = Offsets()
    public private(set) var words: [Int32] = []

    /// A chunk the batched decode kernel takes: one token after a cached prefix.
    public static func isDecode(_ c: SequenceChunk) -> Bool { c.tokens.count == 1 && c.start > 0 }

    /// Packs a step. `draws` has one entry per chunk with `wantsLogits`, in order; `blockTables` is nil for strided
    /// (vAttention) stores, whose owners are slots.
    public init(chunks: [SequenceChunk], draws: [TokenDraw], blockTables: BlockTables?, maxRows: Int) {
        precondition(draws.count == chunks.filter(\.wantsLogits).count, "one draw per chunk that wants logits")
        order = chunks.indices.filter { Self.isDecode(chunks[$0]) } + chunks.indices.filter { !Self.isDecode(chunks[$0]) }
        let realDecodes = chunks.filter(Self.isDecode).count
        tokens = chunks.reduce(0) { $0 + $1.tokens.count }
        guard tokens > 0 else { return }
        decodeOnly = realDecodes == chunks.count && chunks.allSatisfy(\.wantsLogits)
        let lanes = decodeOnly ? min(realDecodes.nextPowerOfTwo, maxRows) : realDecodes
        let paged = blockTables != nil

        var tokenIDs: [Int32] = [], positions: [Int32] = [], owners: [Int32] = []
        rowOfChunk = [Int](repeating: 0, count: chunks.count)
        for (sequence, ci) in order.enumerated() {
            let c = chunks[ci]
            rowOfChunk[ci] = tokenIDs.count
            for (j, t) in c.tokens.enumerated() {
                tokenIDs.append(t)
                positions.append(Int32(c.start + j))
                owners.append(Int32(paged ? sequence : c.slot))
            }
        }
        var wanted: [Int32] = [], parameters: [Int32] = []
        var draw = draws.makeIterator()
        for (i, c) in chunks.enumerated() where c.wantsLogits {  // logits rows in the caller's chunk order
            wanted.append(Int32(rowOfChunk[i] + c.tokens.count - 1))
            parameters += draw.next()!.kernelArguments
        }
        realRows = wanted.count
        var decodeSlots = order.prefix(realDecodes).map { Int32(chunks[$0].slot) }
        var decodeLengths = order.prefix(realDecodes).map { Int32(chunks[$0].start + 1) }
        maxDecodeLength = Int(decodeLengths.max() ?? 0)
        for lane in realDecodes..<max(lanes, realDecodes) {
            tokenIDs.append(0); positions.append(-1); owners.append(Int32(paged ? lane : 0))
            decodeSlots.append(0); decodeLengths.append(0)
            wanted.append(Int32(lane)); parameters += TokenDraw(parameters: .greedy, uniform: 0).kernelArguments
        }
        decodes = max(lanes, realDecodes)
        if lanes > realDecodes { tokens = lanes }
        logitRows = wanted.count
        var tables: [Int32] = []
        if let blockTables {
            for sequence in 0..<max(order.count, lanes) {
                var row = sequence < order.count ? blockTables.table(chunks[order[sequence]].slot) : []
                precondition(row.count <= blockTables.stride, "a block table wider than its stride")
                row += [Int32](repeating: 0, count: blockTables.stride - row.count)
                tables += row
            }
        }
        func put(_ a: [Int32]) -> Int {
            defer { words += a }
            return words.count
        }
        offsets.tokens = put(tokenIDs); offsets.positions = put(positions); offsets.owners = put(owners)
        offsets.decodeSlots = put(decodeSlots); offsets.decodeLengths = put(decodeLengths)
        offsets.wanted = put(wanted); offsets.samplingParameters = put(parameters); offsets.blockTables = put(tables)
    }

    /// Device address of one packed array, for metadata uploaded at `base`.
    public func address(_ field: KeyPath<Offsets, Int>, at base: UInt64) -> UInt64 {
        base + UInt64(offsets[keyPath: field] * 4)
    }

    /// The decode attention's length bucket: lengths round up to a power of two (at least 256) so split sizes and
    /// scratch are reused across steps, but never past what the store holds (a paged table is exactly that wide).
    public static func decodeLengthBucket(maxLength: Int, maxContext: Int) -> Int {
        min(max(256, maxLength.nextPowerOfTwo), max(maxLength, maxContext))
    }
}

extension Int {
    var nextPowerOfTwo: Int { self <= 1 ? 1 : 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount) }
}
