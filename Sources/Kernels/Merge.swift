#if canImport(Glibc)
import Glibc
#endif

/// Merges split-KV partial attention results with a log-sum-exp merge, the
/// combine step of flash-decoding: partial `i` covers a disjoint part of the
/// context and holds `maxes[i]` (max scaled score, -inf if empty),
/// `sums[i]` = Σ exp(s - max) and `accs[i*headDim ..< (i+1)*headDim]` =
/// Σ exp(s - max)·v. Writes the normalized attention output to `output` and
/// returns the merged log-sum-exp `M + log(L)` (-inf if all partials are empty;
/// output is then zeros). The result can be merged again as a partial with
/// max = returned LSE, sum = 1, acc = output, so merges compose hierarchically.
/// Weights and sums are combined in float64.
@discardableResult
public func mergeAttentionPartials(count: Int, headDim: Int,
                                   maxes: UnsafePointer<Float>, sums: UnsafePointer<Double>,
                                   accs: UnsafePointer<Float>,
                                   output: UnsafeMutablePointer<Float>) -> Double {
    var m = -Double.infinity
    for i in 0..<count where sums[i] > 0 && maxes[i] > -.infinity { m = max(m, Double(maxes[i])) }
    guard m > -.infinity else {
        output.update(repeating: 0, count: headDim)
        return -.infinity
    }
    return withUnsafeTemporaryAllocation(of: Double.self, capacity: count + headDim) { buf in
        let weights = buf.baseAddress!
        let out = weights + count
        out.update(repeating: 0, count: headDim)
        var total = 0.0
        for i in 0..<count {
            let live = sums[i] > 0 && maxes[i] > -.infinity
            let w = live ? exp(Double(maxes[i]) - m) : 0
            weights[i] = w
            total += live ? sums[i] * w : 0
            if w == 0 { continue }
            let a = accs + i &* headDim
            for j in 0..<headDim { out[j] += Double(a[j]) * w }
        }
        let inv = 1 / total
        for j in 0..<headDim { output[j] = Float(out[j] * inv) }
        return m + log(total)
    }
}
