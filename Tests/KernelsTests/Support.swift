import VAttention
import Foundation
import Kernels
import Randomness
import Testing

/// Seed for this run: fresh each run unless KERNELS_SEED is set; every failure
/// message includes it so a failing run can be replayed exactly.
let runSeed: UInt64 = {
    if let s = ProcessInfo.processInfo.environment["KERNELS_SEED"], let v = UInt64(s) { return v }
    return UInt64.random(in: 1...UInt64.max)
}()

/// A per-test generator derived from the run seed and a test-specific salt.
func makeRNG(_ salt: String) -> (SplitMix64, UInt64) {
    var h: UInt64 = 1469598103934665603
    for b in salt.utf8 { h = (h ^ UInt64(b)) &* 1099511628211 }
    let seed = runSeed ^ h
    return (SplitMix64(seed: seed), seed)
}

func randomFloats(_ n: Int, _ range: ClosedRange<Float>, _ rng: inout SplitMix64) -> [Float] {
    (0..<n).map { _ in Float.random(in: range, using: &rng) }
}

/// Independent reference: float64, materializes all scores, no tiling.
/// keys/values: [len, kvHeads, d] (already rounded to the cache type); q: [qHeads, d].
/// Returns [qHeads, d] attention over the first `visible` tokens.
func naiveAttention(q: [Float], keys: [Float], values: [Float], visible: Int,
                    shape: AttentionShape, scale: Float) -> [Double] {
    let d = shape.headDim, g = shape.group, kvHeads = shape.kvHeads
    var out = [Double](repeating: 0, count: shape.qHeads * d)
    var scores = [Double](repeating: 0, count: visible)
    for qh in 0..<shape.qHeads {
        let h = qh / g
        for t in 0..<visible {
            var s = 0.0
            for j in 0..<d { s += Double(q[qh * d + j]) * Double(keys[(t * kvHeads + h) * d + j]) }
            scores[t] = s * Double(scale)
        }
        let m = scores.max() ?? 0
        var sum = 0.0
        for t in 0..<visible { scores[t] = Foundation.exp(scores[t] - m); sum += scores[t] }
        for t in 0..<visible {
            let w = scores[t] / sum
            for j in 0..<d { out[qh * d + j] += w * Double(values[(t * kvHeads + h) * d + j]) }
        }
    }
    return out
}

/// Normwise relative error per row: max|got - ref| / max|ref| over each row of
/// `d` values. NaN in `got` yields NaN, which never passes `<= tol`.
func maxRowError(_ got: UnsafeBufferPointer<Float>, _ ref: [Double], d: Int) -> Double {
    var worst = 0.0
    for row in 0..<(ref.count / d) {
        var err = 0.0, mag = 0.0
        for j in 0..<d {
            let gv = Double(got[row * d + j])
            if gv.isNaN { return .nan }
            err = max(err, abs(gv - ref[row * d + j]))
            mag = max(mag, abs(ref[row * d + j]))
        }
        worst = max(worst, err / max(mag, 1e-30))
    }
    return worst
}

enum Layout: String, CaseIterable { case perLayer, mega }

/// A real strided vAttention cache: one buffer each for K and V holding all
/// slots (and for `mega` all layers), pre-filled with NaN bytes so any read
/// outside the written tokens poisons the result.
final class ContiguousCache {
    let kRaw: UnsafeMutableRawPointer, vRaw: UnsafeMutableRawPointer
    let k: KVTensorView, v: KVTensorView
    let kvHeads: Int, headDim: Int

    init(layout: Layout, type: KVElementType, slots: Int, maxContext: Int, kvHeads: Int, headDim: Int) {
        self.kvHeads = kvHeads
        self.headDim = headDim
        let layers = layout == .mega ? 3 : 1
        let bytes = slots * maxContext * layers * kvHeads * headDim * type.byteCount
        kRaw = .allocate(byteCount: bytes, alignment: 64)
        vRaw = .allocate(byteCount: bytes, alignment: 64)
        kRaw.initializeMemory(as: UInt8.self, repeating: 0xFF, count: bytes)
        vRaw.initializeMemory(as: UInt8.self, repeating: 0xFF, count: bytes)
        switch layout {
        case .perLayer:
            k = .perLayer(address: UInt(bitPattern: kRaw), dtype: type, maxContext: maxContext, kvHeads: kvHeads, headDim: headDim)
            v = .perLayer(address: UInt(bitPattern: vRaw), dtype: type, maxContext: maxContext, kvHeads: kvHeads, headDim: headDim)
        case .mega:
            k = .mega(address: UInt(bitPattern: kRaw), dtype: type, layer: 1, layers: layers, maxContext: maxContext, kvHeads: kvHeads, headDim: headDim)
            v = .mega(address: UInt(bitPattern: vRaw), dtype: type, layer: 1, layers: layers, maxContext: maxContext, kvHeads: kvHeads, headDim: headDim)
        }
    }
    deinit { kRaw.deallocate(); vRaw.deallocate() }

    func append(keys: [Float], values: [Float], slot: Int, from start: Int, count: Int) {
        keys.withUnsafeBufferPointer { kp in
            values.withUnsafeBufferPointer { vp in
                appendKV(keys: kp.baseAddress! + start * kvHeads * headDim,
                         values: vp.baseAddress! + start * kvHeads * headDim,
                         slots: [Int](repeating: slot, count: count), positions: Array(start..<start + count),
                         kvHeads: kvHeads, headDim: headDim, into: k, v)
            }
        }
    }
}

/// The vLLM-style paged baseline for the same data: block pool with NaN bytes
/// and block tables that are a shuffled permutation of all blocks (plus spares).
final class PagedCache {
    let kRaw: UnsafeMutableRawPointer, vRaw: UnsafeMutableRawPointer
    let k: PagedKV, v: PagedKV

    init(type: KVElementType, blockSize: Int, lengths: [Int], kvHeads: Int, headDim: Int, rng: inout SplitMix64) {
        let needed = lengths.map { ($0 + blockSize - 1) / blockSize }
        let numBlocks = needed.reduce(0, +) + 3
        var ids = (0..<Int32(numBlocks)).map { $0 }
        ids.shuffle(using: &rng)
        var tables: [[Int32]] = []
        var next = 0
        for n in needed { tables.append(Array(ids[next..<next + n])); next += n }
        let bytes = numBlocks * blockSize * kvHeads * headDim * type.byteCount
        kRaw = .allocate(byteCount: bytes, alignment: 64)
        vRaw = .allocate(byteCount: bytes, alignment: 64)
        kRaw.initializeMemory(as: UInt8.self, repeating: 0xFF, count: bytes)
        vRaw.initializeMemory(as: UInt8.self, repeating: 0xFF, count: bytes)
        k = PagedKV(pool: kRaw, elementType: type, numBlocks: numBlocks, blockSize: blockSize,
                    kvHeads: kvHeads, headDim: headDim, blockTables: tables)
        v = PagedKV(pool: vRaw, elementType: type, numBlocks: numBlocks, blockSize: blockSize,
                    kvHeads: kvHeads, headDim: headDim, blockTables: tables)
    }
    deinit { kRaw.deallocate(); vRaw.deallocate() }

    func append(keys: [Float], values: [Float], sequence: Int, from start: Int, count: Int) {
        keys.withUnsafeBufferPointer { kp in
            values.withUnsafeBufferPointer { vp in
                let row = k.kvHeads * k.headDim
                appendKVPaged(keys: kp.baseAddress! + start * row, values: vp.baseAddress! + start * row,
                              sequences: [Int](repeating: sequence, count: count),
                              positions: Array(start..<start + count), into: k, v)
            }
        }
    }
}

/// Random K/V for one sequence, plus the same values rounded to the cache type.
struct SequenceData {
    let keys: [Float], values: [Float]          // as appended
    let keysRounded: [Float], valuesRounded: [Float]
    init(length: Int, kvHeads: Int, headDim: Int, type: KVElementType, rng: inout SplitMix64) {
        keys = randomFloats(length * kvHeads * headDim, -1...1, &rng)
        values = randomFloats(length * kvHeads * headDim, -1...1, &rng)
        keysRounded = keys.map(type.rounded)
        valuesRounded = values.map(type.rounded)
    }
}

func poisoned(_ n: Int) -> [Float] { [Float](repeating: .nan, count: n) }
