@testable import Engine
import Randomness
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The sampling rule (`sampleToken`), shared by the CPU and the GPU kernel, against direct definitions.
@Suite("Sampling rule")
struct SamplerTests {
    func logits(_ n: Int, _ rng: inout SplitMix64) -> [Float] { (0..<n).map { _ in rng.nextSignedUnitFloat() * 5 } }

    func sample(_ l: [Float], _ p: SamplingParameters, _ u: UInt32) -> Int {
        Int(l.withUnsafeBufferPointer { sampleToken($0, TokenDraw(parameters: p, uniform: u)) })
    }

    /// The rule as first written, with whole sorts: the oracle for the heap selection and the integer sort.
    func sortingReference(_ logits: [Float], _ p: SamplingParameters, _ u: UInt32) -> Int {
        var best = 0
        for i in logits.indices where logits[i] > logits[best] { best = i }
        if p.temperature <= 0 { return best }
        let keys = logits.map(orderedKey)
        var threshold: UInt32 = 0
        if p.topK > 0 && p.topK < logits.count { threshold = keys.sorted(by: >)[p.topK - 1] }
        let weights: [UInt64] = logits.indices.map { i in
            keys[i] >= threshold ? fixedPointWeight(logits[i], logits[best], p.temperature) : 0
        }
        if p.topP < 1 {
            let target = max(1, UInt64(Double(p.topP) * Double(weights.reduce(0, +))))
            var acc: UInt64 = 0
            for i in logits.indices.filter({ weights[$0] > 0 }).sorted(by: { keys[$0] > keys[$1] }) {
                acc += weights[i]
                if acc >= target { threshold = max(threshold, keys[i]); break }
            }
        }
        var kept: UInt64 = 0
        for i in logits.indices where keys[i] >= threshold { kept += weights[i] }
        let r = UInt64(u).multipliedFullWidth(by: kept)
        let target = (r.high << 40) | (r.low >> 24)
        var acc: UInt64 = 0
        for i in logits.indices where keys[i] >= threshold {
            acc += weights[i]
            if target < acc { return i }
        }
        return best
    }

    @Test("the same token as whole sorts pick, with ties, any k and p")
    func sameAsSortingReference() {
        var rng = SplitMix64(seed: 99)
        for trial in 0..<400 {
            // Coarse logits make many ties.
            var l = logits(1 + Int(rng.next() % 3000), &rng)
            if trial % 2 == 0 { l = l.map { ($0 * 4).rounded() / 4 } }
            let k = [0, 1, 2, 40, 1000, l.count - 1, l.count][Int(rng.next() % 7)]
            let p = SamplingParameters(temperature: [0.3, 0.7, 1.5][trial % 3], topK: k,
                                       topP: [1, 0.95, 0.5, 0.01][Int(rng.next() % 4)])
            let u = UInt32(truncatingIfNeeded: rng.next() >> 40)
            #expect(sample(l, p, u) == sortingReference(l, p, u), "trial \(trial)")
        }
    }

    @Test("greedy: arg-max, lowest id on ties, whatever the draw")
    func greedy() {
        var rng = SplitMix64(seed: 1)
        for _ in 0..<20 {
            var l = logits(500, &rng)
            let m = l.indices.max { l[$0] < l[$1] }!
            #expect(sample(l, .greedy, UInt32(rng.next() >> 40)) == m)
            l[m / 2] = l[m]  // a tie with a lower id
            #expect(sample(l, .greedy, 123) == min(m, m / 2))
        }
    }

    @Test("top-k: only the k largest logits are ever drawn")
    func topK() {
        var rng = SplitMix64(seed: 2)
        for k in [1, 5, 50] {
            let l = logits(1000, &rng)
            let allowed = Set(l.indices.sorted { l[$0] > l[$1] }.prefix(k))
            for _ in 0..<200 {
                let t = sample(l, SamplingParameters(temperature: 1, topK: k), UInt32(rng.next() >> 40))
                #expect(allowed.contains(t), "k \(k): drew \(t)")
            }
        }
    }

    @Test("top-p: only the smallest most-likely set reaching p is drawn; it is never empty")
    func topP() {
        var rng = SplitMix64(seed: 3)
        for p in [0.01, 0.5, 0.9] as [Float] {
            let l = logits(400, &rng)
            let top = l.max()!
            let w = l.map { Double(exp($0 - top)) }
            let z = w.reduce(0, +)
            var allowed = Set<Int>(), mass = 0.0
            for i in l.indices.sorted(by: { l[$0] > l[$1] }) where mass < Double(p) * z {
                allowed.insert(i)
                mass += w[i]
            }
            var seen = Set<Int>()
            for _ in 0..<300 {
                let t = sample(l, SamplingParameters(temperature: 1, topP: p), UInt32(rng.next() >> 40))
                #expect(allowed.contains(t), "p \(p): drew \(t) outside the nucleus of \(allowed.count)")
                seen.insert(t)
            }
            #expect(!seen.isEmpty)
        }
    }

    @Test("temperature sampling follows softmax(l / T): χ² over 20 000 draws")
    func distribution() {
        var rng = SplitMix64(seed: 4)
        let l = logits(50, &rng)
        let t: Float = 0.8
        var counts = [Int](repeating: 0, count: l.count)
        let draws = 20_000
        for _ in 0..<draws { counts[sample(l, SamplingParameters(temperature: t), UInt32(rng.next() >> 40))] += 1 }
        let top = l.max()!
        let w = l.map { Double(exp(($0 - top) / t)) }
        let z = w.reduce(0, +)
        var chi2 = 0.0
        for i in l.indices {
            let e = Double(draws) * w[i] / z
            chi2 += (Double(counts[i]) - e) * (Double(counts[i]) - e) / e
        }
        // 49 degrees of freedom: the 99.99th percentile is ≈ 95.
        #expect(chi2 < 95, "χ² \(chi2)")
    }

    @Test("the draw maps monotonically onto id order: u = 0 picks the first kept id, u → 1 the last")
    func inverseCDF() {
        let l: [Float] = [0, 1, 2, 3]
        #expect(sample(l, SamplingParameters(temperature: 1), 0) == 0)
        #expect(sample(l, SamplingParameters(temperature: 1), (1 << 24) - 1) == 3)
        #expect(sample(l, SamplingParameters(temperature: 1, topK: 2), 0) == 2)
    }
}
