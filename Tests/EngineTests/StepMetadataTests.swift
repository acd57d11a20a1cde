import Engine
import Model
import Testing

/// The CUDA model's step packing, on the CPU: row order, padding to a graph bucket, offsets, block tables.
@Suite("StepMetadata: what the CUDA forward pass reads about a step")
struct StepMetadataTests {
    static let greedy = TokenDraw(parameters: .greedy, uniform: 0)

    /// The packed array `field` of `m`, `count` words long.
    static func words(_ m: StepMetadata, _ field: KeyPath<StepMetadata.Offsets, Int>, _ count: Int) -> [Int32] {
        Array(m.words[m.offsets[keyPath: field]..<(m.offsets[keyPath: field] + count)])
    }

    @Test("a decode-only step is padded to the next power of two lanes: position −1, length 0, greedy rows")
    func decodePadding() {
        let chunks = [SequenceChunk(slot: 5, start: 9, tokens: [11], wantsLogits: true),
                      SequenceChunk(slot: 2, start: 300, tokens: [12], wantsLogits: true),
                      SequenceChunk(slot: 7, start: 40, tokens: [13], wantsLogits: true)]
        let draw = TokenDraw(parameters: SamplingParameters(temperature: 0.7, topK: 40, topP: 0.9), uniform: 77)
        let m = StepMetadata(chunks: chunks, draws: [draw, Self.greedy, Self.greedy], blockTables: nil, maxRows: 64)
        #expect(m.decodeOnly && m.decodes == 4 && m.tokens == 4 && m.logitRows == 4 && m.realRows == 3)
        #expect(m.maxDecodeLength == 301)
        #expect(Self.words(m, \.tokens, 4) == [11, 12, 13, 0])
        #expect(Self.words(m, \.positions, 4) == [9, 300, 40, -1])
        #expect(Self.words(m, \.owners, 4) == [5, 2, 7, 0], "vAttention: the owner of a token is its slot")
        #expect(Self.words(m, \.decodeSlots, 4) == [5, 2, 7, 0])
        #expect(Self.words(m, \.decodeLengths, 4) == [10, 301, 41, 0])
        #expect(Self.words(m, \.wanted, 4) == [0, 1, 2, 3])
        #expect(Self.words(m, \.samplingParameters, 4) == draw.kernelArguments)
        #expect(Self.words(m, \.samplingParameters, 16).suffix(4) == Self.greedy.kernelArguments[...])
        #expect(m.offsets.blockTables == m.words.count, "no block tables for a strided store")
        // The bucket never exceeds maxRows.
        let five = (0..<5).map { SequenceChunk(slot: $0, start: 3, tokens: [1], wantsLogits: true) }
        let capped = StepMetadata(chunks: five, draws: Array(repeating: Self.greedy, count: 5), blockTables: nil, maxRows: 6)
        #expect(capped.decodes == 6 && capped.logitRows == 6)
    }

    @Test("a mixed step: decodes first as one block, then prompt chunks; logits rows in the caller's order; no padding")
    func mixedOrder() {
        let chunks = [SequenceChunk(slot: 1, start: 0, tokens: [1, 2, 3], wantsLogits: true),
                      SequenceChunk(slot: 4, start: 20, tokens: [9], wantsLogits: true),
                      SequenceChunk(slot: 3, start: 8, tokens: [5, 6], wantsLogits: false)]
        let m = StepMetadata(chunks: chunks, draws: [Self.greedy, Self.greedy], blockTables: nil, maxRows: 64)
        #expect(m.order == [1, 0, 2] && m.rowOfChunk == [1, 0, 4])
        #expect(!m.decodeOnly && m.decodes == 1 && m.tokens == 6 && m.logitRows == 2)
        #expect(Self.words(m, \.tokens, 6) == [9, 1, 2, 3, 5, 6])
        #expect(Self.words(m, \.positions, 6) == [20, 0, 1, 2, 8, 9])
        #expect(Self.words(m, \.wanted, 2) == [3, 0], "chunk 0's last row (3), then chunk 1's (0)")
        #expect(m.address(\.positions, at: 0x1000) == 0x1000 + UInt64(m.offsets.positions * 4))
        // A one-token prompt at position 0 is a prefill, not a decode (nothing cached to attend to).
        let first = StepMetadata(chunks: [SequenceChunk(slot: 0, start: 0, tokens: [4], wantsLogits: true)],
                                 draws: [Self.greedy], blockTables: nil, maxRows: 8)
        #expect(first.decodes == 0 && !first.decodeOnly)
    }

    @Test("paged: owners are sequences (row order), block tables one padded row per sequence and lane")
    func pagedTables() {
        let tables: [Int: [Int32]] = [3: [7, 8], 6: [2]]
        let chunks = [SequenceChunk(slot: 3, start: 17, tokens: [1], wantsLogits: true),
                      SequenceChunk(slot: 6, start: 4, tokens: [2], wantsLogits: true),
                      SequenceChunk(slot: 3, start: 18, tokens: [3], wantsLogits: true)]
        let m = StepMetadata(chunks: chunks, draws: Array(repeating: Self.greedy, count: 3),
                             blockTables: .init(stride: 4, table: { tables[$0]! }), maxRows: 8)
        #expect(Self.words(m, \.owners, 4) == [0, 1, 2, 3])
        #expect(Self.words(m, \.blockTables, 16) == [7, 8, 0, 0, 2, 0, 0, 0, 7, 8, 0, 0, 0, 0, 0, 0])
        #expect(m.words.count == m.offsets.blockTables + 16)
    }

    @Test("decode length buckets: powers of two from 256, never past the store's context")
    func lengthBuckets() {
        #expect(StepMetadata.decodeLengthBucket(maxLength: 1, maxContext: 4096) == 256)
        #expect(StepMetadata.decodeLengthBucket(maxLength: 257, maxContext: 4096) == 512)
        #expect(StepMetadata.decodeLengthBucket(maxLength: 3000, maxContext: 3500) == 3500)
        #expect(StepMetadata.decodeLengthBucket(maxLength: 100, maxContext: 128) == 128)
    }
}
