import Model

/// Turns a request's sampled tokens into text and decides when it ends: end-of-sequence, stop strings (held back
/// until they cannot match), `maxTokens`, a full context. Knows nothing of scheduling or the model.
public struct OutputProcessor: Sendable {
    /// nil for models without one (dummy weights): events carry no text and there is no end-of-sequence token.
    public let tokenizer: Tokenizer?

    public init(tokenizer: Tokenizer?) { self.tokenizer = tokenizer }

    /// One request's output so far.
    public struct State: Sendable {
        let parameters: SamplingParameters
        var detokenizer: StreamingDetokenizer?
        /// The stop strings, and the text decoded but not yet emitted (it may be the start of one).
        var stops: StopScanner
        public internal(set) var text = ""
        public internal(set) var finished: FinishReason?
    }

    public func start(_ parameters: SamplingParameters) -> State {
        State(parameters: parameters, detokenizer: tokenizer.map { StreamingDetokenizer(tokenizer: $0) },
              stops: StopScanner(parameters.stop))
    }

    /// Takes one sampled token of a request that has now generated `generated` tokens (this one included) and whose
    /// sequence (prompt + output) is `length` long, in a context of `maxContext`; returns the new text and, when it
    /// ends here, why.
    public func push(_ token: TokenID, into state: inout State, generated: Int, length: Int, maxContext: Int)
        -> (text: String, finished: FinishReason?) {
        var finish: FinishReason?
        let isEOS = tokenizer.map { token == $0.eosID || $0.type(of: token) == .control } ?? false
        var piece = ""
        if isEOS && !state.parameters.ignoreEOS {
            finish = .stop
        } else if state.detokenizer != nil {
            piece = state.detokenizer!.push(token)
        }
        // Stop strings: cut at the first match; otherwise hold back a tail that could still become one. Only the new
        // piece is scanned (`StopScanner` keeps its state), so a token costs the same whatever the text so far.
        var (text, stopped) = state.stops.push(piece)
        if stopped {
            finish = .stop
        } else {
            if finish == nil && (generated >= state.parameters.maxTokens || length >= maxContext) {
                finish = .length
            }
            if finish != nil { text += flushHeld(&state) }  // nothing can become a stop string any more
        }
        state.text += text
        state.finished = finish
        return (text, finish)
    }

    /// Ends a request for a reason other than its tokens (cancelled, out of memory): the text it held goes out.
    public func end(_ state: inout State, _ reason: FinishReason) -> String {
        let text = flushHeld(&state)
        state.text += text
        state.finished = reason
        return text
    }

    private func flushHeld(_ state: inout State) -> String {
        var text = state.stops.flush()
        if state.detokenizer != nil { text += state.detokenizer!.flush() }
        return text
    }
}
