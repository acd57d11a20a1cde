import VAttention
import Foundation
import Kernels
import Randomness
import Testing

/// Tolerance for every path (fp32, fp16, bf16 KV): the reference uses the very
/// same rounded K/V values, so storage rounding is not error; what remains is
/// float32 arithmetic vs float64. Metric: per output row (sequence, query
/// head), max |got - ref| / max |ref|.
let tolerance = 1e-5

struct KernelCase: CustomTestStringConvertible, Sendable {
    var group: Int
    var headDim: Int
    var layout: Layout
    var type: KVElementType
    var testDescription: String { "g\(group) d\(headDim) \(layout.rawValue) \(type)" }

    var shape: AttentionShape {
        let kvHeads = group == 8 ? 1 : 2
        return AttentionShape(qHeads: kvHeads * group, kvHeads: kvHeads, headDim: headDim)
    }
}

/// Head sizes: SmolLM2's and Llama's, and one that is a multiple of 8 but not of 16 (the AVX-512 kernels hand it
/// to the AVX2 ones).
let allCases: [KernelCase] = [1, 3, 4, 8].flatMap { g in
    [64, 128, 40].flatMap { d in
        Layout.allCases.flatMap { layout in
            KVElementType.allCases.map { KernelCase(group: g, headDim: d, layout: layout, type: $0) }
        }
    }
}

/// Every instruction set this CPU runs the float kernels on.
let instructionSets = CPUInstructionSet.allCases.filter(\.isSupported)

/// Small, odd chunk/tile sizes so short test sequences still cross many
/// boundaries; every length is forced off a multiple of each of them.
func randomOptions(_ rng: inout SplitMix64, _ isa: CPUInstructionSet = .best) -> AttentionOptions {
    AttentionOptions(kvChunk: [24, 40, 256].randomElement(using: &rng)!,
                     queryTile: [1, 5, 16].randomElement(using: &rng)!,
                     keyTile: [8, 13, 64].randomElement(using: &rng)!,
                     threads: [1, 2].randomElement(using: &rng)!,
                     instructionSet: isa)
}

func offBoundaries(_ n: Int, _ o: AttentionOptions) -> Int {
    var n = n
    let sizes = [o.kvChunk, o.keyTile, o.queryTile, 16, 7, 8].filter { $0 > 1 }
    while sizes.contains(where: { n % $0 == 0 }) { n += 1 }
    return n
}

@Suite struct DecodeTests {
    @Test(arguments: allCases, instructionSets)
    func decodeMatchesNaiveReference(_ c: KernelCase, isa: CPUInstructionSet) {
        var (rng, seed) = makeRNG("decode \(c.testDescription) \(isa)")
        let shape = c.shape, d = c.headDim
        let options = randomOptions(&rng, isa)
        let lengths = [1, offBoundaries(Int.random(in: 2...120, using: &rng), options),
                       offBoundaries(Int.random(in: 121...300, using: &rng), options)]
        var slots = Array(0..<4)
        slots.shuffle(using: &rng)
        slots = Array(slots.prefix(lengths.count))
        let cache = ContiguousCache(layout: c.layout, type: c.type, slots: 4, maxContext: 320,
                                    kvHeads: shape.kvHeads, headDim: d)
        var data: [SequenceData] = []
        for (s, n) in lengths.enumerated() {
            let seq = SequenceData(length: n, kvHeads: shape.kvHeads, headDim: d, type: c.type, rng: &rng)
            cache.append(keys: seq.keys, values: seq.values, slot: slots[s], from: 0, count: n)
            data.append(seq)
        }
        let q = randomFloats(lengths.count * shape.qHeads * d, -2...2, &rng)
        let scale = Float.random(in: 0.5...3, using: &rng) / Float(d).squareRoot()
        var out = poisoned(q.count)
        decodeAttention(query: q, keys: cache.k, values: cache.v, slots: slots, lengths: lengths,
                        shape: shape, scale: scale, output: &out, options: options)
        let row = shape.qHeads * d
        for s in 0..<lengths.count {
            let ref = naiveAttention(q: Array(q[s * row..<(s + 1) * row]), keys: data[s].keysRounded,
                                     values: data[s].valuesRounded, visible: lengths[s], shape: shape, scale: scale)
            let err = out.withUnsafeBufferPointer { maxRowError(UnsafeBufferPointer(rebasing: $0[s * row..<(s + 1) * row]), ref, d: d) }
            #expect(err <= tolerance, "seed \(seed) \(c.testDescription) seq \(s) len \(lengths[s]) \(options): rel err \(err)")
        }
        // A sequence's output does not depend on the others in the batch, bit for bit.
        for s in 0..<lengths.count {
            var alone = poisoned(row)
            q.withUnsafeBufferPointer {
                decodeAttention(query: $0.baseAddress! + s * row, keys: cache.k, values: cache.v, slots: [slots[s]],
                                lengths: [lengths[s]], shape: shape, scale: scale, output: &alone, options: options)
            }
            #expect(alone.map(\.bitPattern) == out[s * row..<(s + 1) * row].map(\.bitPattern),
                    "seed \(seed) \(c.testDescription) seq \(s) alone vs batched \(options)")
        }
    }

    @Test(arguments: [16, 256, 7], KVElementType.allCases)
    func pagedDecodeEqualsContiguous(blockSize: Int, type: KVElementType) {
        var (rng, seed) = makeRNG("paged decode \(blockSize) \(type)")
        let g = [1, 3, 4, 8].randomElement(using: &rng)!
        let c = KernelCase(group: g, headDim: [64, 128, 40].randomElement(using: &rng)!, layout: .mega, type: type)
        let shape = c.shape, d = c.headDim
        let options = randomOptions(&rng, instructionSets.randomElement(using: &rng)!)
        let lengths = [offBoundaries(Int.random(in: 200...300, using: &rng), options), 1,
                       offBoundaries(Int.random(in: 2...100, using: &rng), options)]
        let slots = [2, 0, 1]
        let cache = ContiguousCache(layout: .mega, type: type, slots: 3, maxContext: 300, kvHeads: shape.kvHeads, headDim: d)
        let paged = PagedCache(type: type, blockSize: blockSize, lengths: lengths, kvHeads: shape.kvHeads, headDim: d, rng: &rng)
        var data: [SequenceData] = []
        for (s, n) in lengths.enumerated() {
            let seq = SequenceData(length: n, kvHeads: shape.kvHeads, headDim: d, type: type, rng: &rng)
            cache.append(keys: seq.keys, values: seq.values, slot: slots[s], from: 0, count: n)
            paged.append(keys: seq.keys, values: seq.values, sequence: s, from: 0, count: n)
            data.append(seq)
        }
        let q = randomFloats(lengths.count * shape.qHeads * d, -2...2, &rng)
        let scale = 1.5 / Float(d).squareRoot()
        var contiguous = poisoned(q.count), pagedOut = poisoned(q.count)
        decodeAttention(query: q, keys: cache.k, values: cache.v, slots: slots, lengths: lengths,
                        shape: shape, scale: scale, output: &contiguous, options: options)
        decodeAttention(query: q, keys: paged.k, values: paged.v, lengths: lengths,
                        shape: shape, scale: scale, output: &pagedOut, options: options)
        // Same loops, only addressing differs: results must be bit-identical.
        #expect(pagedOut.map(\.bitPattern) == contiguous.map(\.bitPattern), "seed \(seed) g\(g) d\(d) \(options)")
        let row = shape.qHeads * d
        for s in 0..<lengths.count {
            let ref = naiveAttention(q: Array(q[s * row..<(s + 1) * row]), keys: data[s].keysRounded,
                                     values: data[s].valuesRounded, visible: lengths[s], shape: shape, scale: scale)
            let err = pagedOut.withUnsafeBufferPointer { maxRowError(UnsafeBufferPointer(rebasing: $0[s * row..<(s + 1) * row]), ref, d: d) }
            #expect(err <= tolerance, "seed \(seed) paged bs\(blockSize) seq \(s): rel err \(err)")
        }
    }

    @Test func zeroLengthGivesZerosAndThreadsAreDeterministic() {
        var (rng, seed) = makeRNG("decode misc")
        let shape = AttentionShape(qHeads: 6, kvHeads: 2, headDim: 64)
        let cache = ContiguousCache(layout: .perLayer, type: .fp32, slots: 2, maxContext: 700, kvHeads: 2, headDim: 64)
        let seq = SequenceData(length: 650, kvHeads: 2, headDim: 64, type: .fp32, rng: &rng)
        cache.append(keys: seq.keys, values: seq.values, slot: 1, from: 0, count: 650)
        let q = randomFloats(2 * 6 * 64, -2...2, &rng)
        var one = poisoned(q.count), two = poisoned(q.count)
        decodeAttention(query: q, keys: cache.k, values: cache.v, slots: [0, 1], lengths: [0, 650], shape: shape,
                        scale: 0.125, output: &one, options: AttentionOptions(threads: 1))
        decodeAttention(query: q, keys: cache.k, values: cache.v, slots: [0, 1], lengths: [0, 650], shape: shape,
                        scale: 0.125, output: &two, options: AttentionOptions(threads: 2))
        #expect(one[0..<(6 * 64)].allSatisfy { $0 == 0 }, "seed \(seed)")
        #expect(one.map(\.bitPattern) == two.map(\.bitPattern), "seed \(seed)")
    }
}

@Suite struct PrefillTests {
    /// One chunk at offset 0 and one later chunk at offset > 0 of the same
    /// sequence (chunked prefill), each row checked against the naive reference
    /// over positions 0...offset+i.
    @Test(arguments: allCases.filter { $0.layout == ($0.type == .fp16 ? .mega : .perLayer) || $0.group == 3 },
          instructionSets)
    func prefillMatchesNaiveReference(_ c: KernelCase, isa: CPUInstructionSet) {
        var (rng, seed) = makeRNG("prefill \(c.testDescription) \(isa)")
        let shape = c.shape, d = c.headDim
        let options = randomOptions(&rng, isa)
        let first = offBoundaries(Int.random(in: 30...90, using: &rng), options)
        let second = Bool.random(using: &rng) ? 1 : offBoundaries(Int.random(in: 2...40, using: &rng), options)
        let total = first + second
        let cache = ContiguousCache(layout: c.layout, type: c.type, slots: 3, maxContext: 140, kvHeads: shape.kvHeads, headDim: d)
        let seq = SequenceData(length: total, kvHeads: shape.kvHeads, headDim: d, type: c.type, rng: &rng)
        let slot = 2
        let scale = Float.random(in: 0.5...3, using: &rng) / Float(d).squareRoot()
        let rowSize = shape.qHeads * d
        for (offset, length) in [(0, first), (first, second)] {
            cache.append(keys: seq.keys, values: seq.values, slot: slot, from: offset, count: length)
            let q = randomFloats(length * rowSize, -2...2, &rng)
            var out = poisoned(q.count)
            prefillAttention(query: q, chunkLength: length, offset: offset, keys: cache.k, values: cache.v, slot: slot,
                             shape: shape, scale: scale, output: &out, options: options)
            var worst = 0.0
            for i in 0..<length {
                let ref = naiveAttention(q: Array(q[i * rowSize..<(i + 1) * rowSize]), keys: seq.keysRounded,
                                         values: seq.valuesRounded, visible: offset + i + 1, shape: shape, scale: scale)
                let err = out.withUnsafeBufferPointer { maxRowError(UnsafeBufferPointer(rebasing: $0[i * rowSize..<(i + 1) * rowSize]), ref, d: d) }
                if !(err <= worst) { worst = err }
            }
            #expect(worst <= tolerance, "seed \(seed) \(c.testDescription) offset \(offset) chunk \(length) \(options): rel err \(worst)")
        }
    }

    @Test(arguments: [16, 256, 7], KVElementType.allCases)
    func pagedPrefillEqualsContiguous(blockSize: Int, type: KVElementType) {
        var (rng, seed) = makeRNG("paged prefill \(blockSize) \(type)")
        let g = [1, 3, 4, 8].randomElement(using: &rng)!
        let c = KernelCase(group: g, headDim: [64, 128, 40].randomElement(using: &rng)!, layout: .perLayer, type: type)
        let shape = c.shape, d = c.headDim
        let options = randomOptions(&rng, instructionSets.randomElement(using: &rng)!)
        let offset = offBoundaries(Int.random(in: 20...60, using: &rng), options)
        let length = offBoundaries(Int.random(in: 2...30, using: &rng), options)
        let total = offset + length
        let cache = ContiguousCache(layout: .perLayer, type: type, slots: 2, maxContext: total, kvHeads: shape.kvHeads, headDim: d)
        // Sequence 1 is the one under test; sequence 0 owns other blocks of the pool.
        let paged = PagedCache(type: type, blockSize: blockSize, lengths: [40, total], kvHeads: shape.kvHeads, headDim: d, rng: &rng)
        let seq = SequenceData(length: total, kvHeads: shape.kvHeads, headDim: d, type: type, rng: &rng)
        cache.append(keys: seq.keys, values: seq.values, slot: 1, from: 0, count: total)
        paged.append(keys: seq.keys, values: seq.values, sequence: 1, from: 0, count: total)
        let q = randomFloats(length * shape.qHeads * d, -2...2, &rng)
        var contiguous = poisoned(q.count), pagedOut = poisoned(q.count)
        prefillAttention(query: q, chunkLength: length, offset: offset, keys: cache.k, values: cache.v, slot: 1,
                         shape: shape, scale: 0.2, output: &contiguous, options: options)
        prefillAttention(query: q, chunkLength: length, offset: offset, keys: paged.k, values: paged.v, sequence: 1,
                         shape: shape, scale: 0.2, output: &pagedOut, options: options)
        #expect(!pagedOut.contains { $0.isNaN }, "seed \(seed)")
        #expect(pagedOut.map(\.bitPattern) == contiguous.map(\.bitPattern), "seed \(seed) g\(g) d\(d) bs\(blockSize) \(options)")
        let rowSize = shape.qHeads * d
        let i = length - 1
        let ref = naiveAttention(q: Array(q[i * rowSize..<(i + 1) * rowSize]), keys: seq.keysRounded,
                                 values: seq.valuesRounded, visible: total, shape: shape, scale: 0.2)
        let err = pagedOut.withUnsafeBufferPointer { maxRowError(UnsafeBufferPointer(rebasing: $0[i * rowSize..<(i + 1) * rowSize]), ref, d: d) }
        #expect(err <= tolerance, "seed \(seed) last row rel err \(err)")
    }

    /// A query row's output is the same whichever rows share its tile (query tiles of 1, 5, 16 positions) and
    /// however many threads run: bit for bit, every instruction set.
    @Test(arguments: instructionSets)
    func rowsDoNotDependOnTheirTile(isa: CPUInstructionSet) {
        var (rng, seed) = makeRNG("prefill tiles \(isa)")
        let shape = AttentionShape(qHeads: 9, kvHeads: 3, headDim: 64)
        let offset = 37, length = 45, total = offset + length
        let cache = ContiguousCache(layout: .perLayer, type: .fp32, slots: 1, maxContext: total, kvHeads: 3, headDim: 64)
        let seq = SequenceData(length: total, kvHeads: 3, headDim: 64, type: .fp32, rng: &rng)
        cache.append(keys: seq.keys, values: seq.values, slot: 0, from: 0, count: total)
        let q = randomFloats(length * shape.qHeads * 64, -2...2, &rng)
        var results: [[UInt32]] = []
        for (queryTile, threads) in [(1, 1), (5, 2), (16, 1), (16, 2)] {
            var out = poisoned(q.count)
            prefillAttention(query: q, chunkLength: length, offset: offset, keys: cache.k, values: cache.v, slot: 0,
                             shape: shape, scale: 0.125, output: &out,
                             options: AttentionOptions(queryTile: queryTile, keyTile: 16, threads: threads,
                                                       instructionSet: isa))
            results.append(out.map(\.bitPattern))
        }
        for r in results.dropFirst() { #expect(r == results[0], "seed \(seed) \(isa)") }
    }
}
