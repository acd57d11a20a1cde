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

/// Picks the next token from logits. The random stream belongs to the request and advances once per token.
struct Sampler {
    var random: SplitMix64

    init(seed: UInt64) { random = SplitMix64(seed: seed) }

    mutating func sample(_ logits: [Float], _ p: SamplingParameters) -> Int32 {
        // One draw per token whatever the parameters, so the stream stays aligned with the token count.
        let u = Float(random.next() >> 40) / Float(1 << 24)
        if p.temperature <= 0 {
            var best = 0
            for i in logits.indices where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        var order = Array(logits.indices)
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        if p.topK > 0 && p.topK < order.count { order.removeSubrange(p.topK...) }
        let top = logits[order[0]]
        var probs = order.map { Double(exp((logits[$0] - top) / p.temperature)) }
        let total = probs.reduce(0, +)
        for i in probs.indices { probs[i] /= total }
        if p.topP < 1 {
            var mass = 0.0, keep = 0
            while keep < probs.count && mass < Double(p.topP) { mass += probs[keep]; keep += 1 }
            probs.removeSubrange(max(keep, 1)...)
            order.removeSubrange(max(keep, 1)...)
            let kept = probs.reduce(0, +)
            for i in probs.indices { probs[i] /= kept }
        }
        var acc = 0.0
        for (i, q) in probs.enumerated() {
            acc += q
            if Double(u) < acc { return Int32(order[i]) }
        }
        return Int32(order[probs.count - 1])
    }
}
