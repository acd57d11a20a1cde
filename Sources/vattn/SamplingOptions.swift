import ArgumentParser
import Engine

/// The sampling flags of `vattn chat` and `vattn generate`.
struct SamplingOptions: ParsableArguments {
    @Option(help: "Sampling temperature (0 = always the most likely token: the same prompt gets the same text).")
    var temperature: Float = 0.7
    @Option(help: "Nucleus sampling: sample only among the most likely tokens whose probabilities add up to this.")
    var topP: Float = 0.95
    @Option(help: "Sample only among the k most likely tokens (0 = no limit).")
    var topK = 40
    @Option(help: "Random seed: the same seed and the same prompt give the same text.")
    var seed: UInt64?

    func validate() throws {
        guard temperature >= 0, temperature.isFinite else {
            throw ValidationError("--temperature must be a number ≥ 0, got \(temperature)")
        }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
        guard topK >= 0 else { throw ValidationError("--top-k must be ≥ 0 (0 = no limit), got \(topK)") }
    }

    /// `seedOffset` varies a fixed seed between draws that must not repeat each other (turns of a chat).
    func parameters(maxTokens: Int, stop: [String] = [], seedOffset: UInt64 = 0) -> SamplingParameters {
        SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: seed.map { $0 &+ seedOffset },
                           maxTokens: maxTokens, stop: stop)
    }
}
