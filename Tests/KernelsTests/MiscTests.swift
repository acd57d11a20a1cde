import VAttention
import Foundation
import Kernels
import Synchronization
import Testing

@Suite struct MergeTests {
    /// Splits a random score vector into random (sometimes empty) parts,
    /// builds each part's (max, sum, acc) in float64 → stored precision, merges
    /// and compares with the softmax over everything.
    @Test(arguments: 0..<8)
    func mergeMatchesFullSoftmax(trial: Int) {
        var (rng, seed) = makeRNG("merge \(trial)")
        let n = Int.random(in: 1...400, using: &rng), d = 16
        let scores = (0..<n).map { _ in Double.random(in: -30...30, using: &rng) }
        let values = (0..<n * d).map { _ in Double(Float.random(in: -1...1, using: &rng)) }
        var cuts = (0..<Int.random(in: 0...6, using: &rng)).map { _ in Int.random(in: 0...n, using: &rng) }
        cuts = ([0] + cuts + [n]).sorted()  // duplicates give empty partials
        var maxes: [Float] = [], sums: [Double] = [], accs: [Float] = []
        for (a, b) in zip(cuts, cuts.dropFirst()) {
            let m = scores[a..<b].max() ?? -.infinity
            maxes.append(Float(m))
            var s = 0.0
            var acc = [Double](repeating: 0, count: d)
            for t in a..<b {
                let w = Foundation.exp(scores[t] - Double(Float(m)))
                s += w
                for j in 0..<d { acc[j] += w * values[t * d + j] }
            }
            sums.append(s)
            accs += acc.map { Float($0) }
        }
        var out = poisoned(d)
        let lse = mergeAttentionPartials(count: maxes.count, headDim: d, maxes: maxes, sums: sums, accs: accs, output: &out)

        let m = scores.max()!
        let total = scores.reduce(0) { $0 + Foundation.exp($1 - m) }
        var ref = [Double](repeating: 0, count: d)
        for t in 0..<n { for j in 0..<d { ref[j] += Foundation.exp(scores[t] - m) / total * values[t * d + j] } }
        let err = out.withUnsafeBufferPointer { maxRowError($0, ref, d: d) }
        #expect(err <= 1e-6, "seed \(seed) parts \(maxes.count) err \(err)")
        #expect(abs(lse - (m + Foundation.log(total))) <= 1e-9 * max(1, abs(lse)), "seed \(seed)")

        // Hierarchical: merge halves, then merge the two results as partials (max = lse, sum = 1).
        let half = maxes.count / 2
        var o1 = poisoned(d), o2 = poisoned(d)
        let l1 = mergeAttentionPartials(count: half, headDim: d, maxes: maxes, sums: sums, accs: accs, output: &o1)
        let l2 = maxes.withUnsafeBufferPointer { mp in sums.withUnsafeBufferPointer { sp in accs.withUnsafeBufferPointer { ap in
            mergeAttentionPartials(count: maxes.count - half, headDim: d, maxes: mp.baseAddress! + half,
                                   sums: sp.baseAddress! + half, accs: ap.baseAddress! + half * d, output: &o2)
        } } }
        var out2 = poisoned(d)
        let l12 = mergeAttentionPartials(count: 2, headDim: d, maxes: [Float(l1), Float(l2)],
                                         sums: [l1.isFinite ? 1 : 0, l2.isFinite ? 1 : 0], accs: o1 + o2, output: &out2)
        let err2 = out2.withUnsafeBufferPointer { maxRowError($0, ref, d: d) }
        #expect(err2 <= 1e-5, "seed \(seed) hierarchical err \(err2)")
        #expect(abs(l12 - lse) <= 1e-5 * max(1, abs(lse)), "seed \(seed)")
    }

    @Test func allEmptyPartialsGiveZeros() {
        var out = poisoned(8)
        let lse = mergeAttentionPartials(count: 2, headDim: 8, maxes: [-.infinity, -.infinity], sums: [0, 0],
                                         accs: [Float](repeating: 0, count: 16), output: &out)
        #expect(lse == -.infinity)
        #expect(out == [Float](repeating: 0, count: 8))
    }
}

@Suite struct BlockAllocatorTests {
    @Test func allocateAndFree() throws {
        var a = BlockAllocator(blockCount: 10)
        #expect(a.canAllocate(blocks: 10))
        #expect(!a.canAllocate(blocks: 11))
        let x = try a.allocate(blocks: 4)
        let y = try a.allocate(blocks: 6)
        #expect(Set(x + y) == Set(0..<10))
        #expect(a.freeCount == 0 && !a.canAllocate(blocks: 1))
        #expect(throws: BlockAllocatorError.outOfBlocks(requested: 1, available: 0)) { try a.allocate(blocks: 1) }
        try a.free(x)
        #expect(a.freeCount == 4)
        let z = try a.allocate(blocks: 4)
        #expect(Set(z) == Set(x))
    }

    @Test func doubleFreeIsAnErrorAndChangesNothing() throws {
        var a = BlockAllocator(blockCount: 8)
        let x = try a.allocate(blocks: 3)
        try a.free([x[0]])
        #expect(throws: BlockAllocatorError.doubleFree(x[0])) { try a.free([x[0]]) }
        // A batch with a repeated id or an already-free id frees nothing.
        #expect(throws: BlockAllocatorError.doubleFree(x[1])) { try a.free([x[1], x[1]]) }
        #expect(throws: BlockAllocatorError.doubleFree(x[0])) { try a.free([x[2], x[0]]) }
        #expect(a.freeCount == 6)
        #expect(throws: BlockAllocatorError.invalidBlock(8)) { try a.free([8]) }
        #expect(throws: BlockAllocatorError.invalidBlock(-1)) { try a.free([-1]) }
        try a.free([x[1], x[2]])
        #expect(a.freeCount == 8)
    }
}

@Suite struct ConversionTests {
    @Test func bf16RoundsToNearestEven() {
        #expect(bf16Bits(1.0) == 0x3F80)
        #expect(bf16Bits(1 + 0x1p-8) == 0x3F80)              // tie → even (down)
        #expect(bf16Bits(1 + 3 * 0x1p-8) == 0x3F82)          // tie → even (up)
        #expect(bf16Bits(1 + 0x1p-8 + 0x1p-20) == 0x3F81)    // above tie → up
        #expect(bf16Bits(-2.5) == 0xC020)
        #expect(bf16Bits(.greatestFiniteMagnitude) == 0x7F80) // rounds to inf
        #expect(bf16Bits(.infinity) == 0x7F80)
        #expect(floatFromBF16(bf16Bits(.nan)).isNaN)
        var (rng, seed) = makeRNG("bf16")
        for _ in 0..<10_000 {
            let x = Float.random(in: -1e6...1e6, using: &rng)
            let r = floatFromBF16(bf16Bits(x))
            let down = floatFromBF16(UInt16(x.bitPattern >> 16)), up = floatFromBF16(UInt16(x.bitPattern >> 16) + 1)
            let best = abs(Double(x) - Double(down)) <= abs(Double(x) - Double(up)) ? down : up
            if abs(Double(x) - Double(down)) == abs(Double(x) - Double(up)) { continue }
            #expect(r == best, "seed \(seed) x \(x)")
        }
    }

    /// Every fp16 bit pattern read through the kernels' SIMD converter (a
    /// length-1 decode returns V exactly) must equal Swift's Float(Float16).
    @Test func fp16KernelConversionCoversAllPatterns() {
        let d = 64, seqs = 65536 / d
        let shape = AttentionShape(qHeads: 1, kvHeads: 1, headDim: d)
        let cache = ContiguousCache(layout: .perLayer, type: .fp16, slots: seqs, maxContext: 1, kvHeads: 1, headDim: d)
        for s in 0..<seqs {
            for j in 0..<d {
                cache.kRaw.storeBytes(of: UInt16(0), toByteOffset: (s * d + j) * 2, as: UInt16.self)
                cache.vRaw.storeBytes(of: UInt16(s * d + j), toByteOffset: (s * d + j) * 2, as: UInt16.self)
            }
        }
        let q = [Float](repeating: 0, count: seqs * d)
        var out = poisoned(seqs * d)
        decodeAttention(query: q, keys: cache.k, values: cache.v, slots: Array(0..<seqs), lengths: [Int](repeating: 1, count: seqs),
                        shape: shape, scale: 1, output: &out)
        var mismatches = 0
        for bits in 0..<65536 {
            let want = Float(Float16(bitPattern: UInt16(bits)))
            let got = out[bits]
            // == (not bit equality): attention's acc starts at +0, so a -0 value reads back as +0.
            if want.isNaN ? !got.isNaN : got != want { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    @Test func appendWritesOnlyItsTokens() {
        for type in KVElementType.allCases {
            let cache = ContiguousCache(layout: .mega, type: type, slots: 2, maxContext: 5, kvHeads: 2, headDim: 8)
            let keys = (0..<3 * 16).map { Float($0) + 0.5 }, values = keys.map { -$0 }
            cache.append(keys: keys, values: values, slot: 1, from: 1, count: 2)  // positions 1, 2
            let layerStride = 2 * 8, tokenStride = 3 * layerStride, slotStride = 5 * tokenStride
            var written = 0
            for e in 0..<(2 * slotStride) {
                let kv = type.load(from: UnsafeRawPointer(bitPattern: cache.k.address - UInt(layerStride * type.byteCount))!, at: e)  // whole mega tensor
                let slot = e / slotStride, tok = (e % slotStride) / tokenStride, layer = (e % tokenStride) / layerStride
                if slot == 1 && (tok == 1 || tok == 2) && layer == 1 {
                    let idx = tok * 16 + e % layerStride
                    #expect(kv == type.rounded(keys[idx]), "\(type) element \(e)")
                    #expect(type.load(from: UnsafeRawPointer(bitPattern: cache.v.address - UInt(layerStride * type.byteCount))!, at: e) == type.rounded(values[idx]))
                    written += 1
                } else {
                    #expect(kv.isNaN, "\(type) element \(e) should be untouched")
                }
            }
            #expect(written == 2 * 16)
        }
    }
}

@Suite struct ParallelForTests {
    @Test(arguments: [0, 1, 7, 1000]) func visitsEachIndexOnce(count: Int) {
        let box = HitBox(count)
        parallelFor(count, threads: 3) { i in box.hit(i) }
        #expect(box.counts() == [Int](repeating: 1, count: count))
    }

    /// Calls back to back (helpers spinning), after pauses (helpers asleep), nested, and from two threads at once:
    /// every index once, every time.
    @Test func everyCallVisitsEachIndexOnce() async {
        func check(_ count: Int) -> Bool {
            let box = HitBox(count)
            parallelFor(count) { i in box.hit(i) }
            return box.counts() == [Int](repeating: 1, count: count)
        }
        #expect((0..<2000).allSatisfy { check($0 % 17) })
        for _ in 0..<3 {
            usleep(5_000)  // longer than the helpers spin
            #expect(check(64))
        }
        let outer = HitBox(8), inner = HitBox(8 * 8)
        parallelFor(8) { i in
            outer.hit(i)
            parallelFor(8) { j in inner.hit(i * 8 + j) }
        }
        #expect(outer.counts() == [Int](repeating: 1, count: 8) && inner.counts() == [Int](repeating: 1, count: 64))
        async let a = Task.detached { (0..<500).allSatisfy { check(1 + $0 % 9) } }.value
        async let b = Task.detached { (0..<500).allSatisfy { check(1 + $0 % 13) } }.value
        let (x, y) = await (a, b)
        #expect(x && y)
    }
}

final class HitBox: @unchecked Sendable {
    let counters: UnsafeMutablePointer<Int>
    let n: Int
    let lock = Mutex(())
    init(_ count: Int) { n = count; counters = .allocate(capacity: max(n, 1)); counters.initialize(repeating: 0, count: max(n, 1)) }
    func hit(_ i: Int) { lock.withLock { _ in counters[i] += 1 } }
    func counts() -> [Int] { Array(UnsafeBufferPointer(start: counters, count: n)) }
    deinit { counters.deallocate() }
}
