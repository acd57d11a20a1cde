import Model
import Randomness
#if canImport(Glibc)
import Glibc
#endif

/// What a request asks of generation. Defaults follow the OpenAI API where it has one.
public struct SamplingParameters: Sendable, Hashable {
    /// 0 = greedy (arg-max, lowest id on ties).
    public var temperature: Float = 1.0
    /// 0 = no top-k cut.
    public var topK: Int = 0
    public var topP: Float = 1.0
    /// Same seed, same prompt → same tokens (also across preemption and batching). nil: from the request id.
    public var seed: UInt64?
    public var maxTokens: Int = 256
    /// Generation stops before any of these strings; they are not part of the output.
    public var stop: [String] = []
    public var ignoreEOS = false

    public init(temperature: Float = 1.0, topK: Int = 0, topP: Float = 1.0, seed: UInt64? = nil, maxTokens: Int = 256,
                stop: [String] = [], ignoreEOS: Bool = false) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
        self.maxTokens = maxTokens
        self.stop = stop
        self.ignoreEOS = ignoreEOS
    }

    public static let greedy = SamplingParameters(temperature: 0)
}

/// A request's random stream: one 24-bit draw per generated token whatever the parameters, so the stream stays
/// aligned with the token count (and the same across batching, preemption and devices).
struct Sampler {
    var random: SplitMix64

    init(seed: UInt64) { random = SplitMix64(seed: seed) }

    mutating func nextDraw() -> UInt32 { UInt32(truncatingIfNeeded: random.next() >> 40) }
}

/// The sampling rule, defined once for the CPU and the GPU kernel (`sample_tokens` in llama.cu), in integers where
/// order could matter so both pick the same token:
/// - temperature ≤ 0: arg-max, lowest id on ties.
/// - weights w_i = exp((l_i − max)/T) as fixed point q_i = ⌊w_i·2³²⌋; keys are the logits' order-preserving bits.
/// - top-k keeps keys ≥ the k-th largest key (ties kept); top-p then keeps keys ≥ t, t the largest key whose mass
///   Σ_{key ≥ t} q reaches ⌊p·Z⌋ (at least one token).
/// - the token is the one, in id order, whose cumulative-mass interval holds ⌊draw·Z′ / 2²⁴⌋ (Z′ the kept mass).
public func sampleToken(_ logits: UnsafeBufferPointer<Float>, _ d: TokenDraw) -> TokenID {
    let p = d.parameters
    var best = 0
    for i in logits.indices where logits[i] > logits[best] { best = i }
    if p.temperature <= 0 { return TokenID(best) }
    let top = logits[best]
    let keys = logits.map(orderedKey)
    var threshold: UInt32 = 0
    if p.topK > 0 && p.topK < logits.count {
        threshold = kthLargest(keys, p.topK)
    }
    let weights: [UInt64] = logits.indices.map { i in
        keys[i] >= threshold ? fixedPointWeight(logits[i], top, p.temperature) : 0
    }
    if p.topP < 1 {
        let total = weights.reduce(0, +)
        let target = max(1, UInt64(Double(p.topP) * Double(total)))
        // Candidates as key << 32 | id, largest key first. Among equal keys the order cannot change the key at which
        // the mass reaches the target, so an unstable sort of plain integers does.
        var candidates: [UInt64] = []
        for i in logits.indices where weights[i] > 0 { candidates.append(UInt64(keys[i]) << 32 | UInt64(i)) }
        candidates.sort(by: >)
        var acc: UInt64 = 0
        for c in candidates {
            acc += weights[Int(truncatingIfNeeded: c & 0xffff_ffff)]
            if acc >= target { threshold = max(threshold, UInt32(truncatingIfNeeded: c >> 32)); break }
        }
    }
    var kept: UInt64 = 0
    for i in logits.indices where keys[i] >= threshold { kept += weights[i] }
    let r = UInt64(d.uniform).multipliedFullWidth(by: kept)
    let target = (r.high << 40) | (r.low >> 24)  // ⌊draw·Z′ / 2²⁴⌋ < Z′
    var acc: UInt64 = 0
    for i in logits.indices where keys[i] >= threshold {
        acc += weights[i]
        if target < acc { return TokenID(i) }
    }
    return TokenID(best)  // unreachable: target < kept
}

/// The k-th largest of `keys`, counting repeats (1 ≤ k < keys.count): a min-heap of the k largest so far, one pass.
func kthLargest(_ keys: [UInt32], _ k: Int) -> UInt32 {
    var heap = Array(keys[0..<k])
    func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < k && heap[l] < heap[m] { m = l }
            if r < k && heap[r] < heap[m] { m = r }
            if m == i { return }
            heap.swapAt(i, m)
            i = m
        }
    }
    for i in stride(from: k / 2 - 1, through: 0, by: -1) { siftDown(i) }
    for x in keys[k...] where x > heap[0] {
        heap[0] = x
        siftDown(0)
    }
    return heap[0]
}

/// Float bits mapped so that unsigned order is float order.
@inline(__always) func orderedKey(_ x: Float) -> UInt32 {
    let b = x.bitPattern
    return b & 0x8000_0000 != 0 ? ~b : b | 0x8000_0000
}

@inline(__always) func fixedPointWeight(_ l: Float, _ top: Float, _ temperature: Float) -> UInt64 {
    UInt64(exp((l - top) / temperature) * 4_294_967_296.0)
}
