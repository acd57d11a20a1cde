/// A multi-turn chat as `vattn chat` keeps it: an optional system prompt and the finished turns.
///
/// Every turn the whole history is rendered again through the model's chat template (the model is stateless
/// between requests: it sees only the prompt), and when that prompt no longer fits, the oldest turns are dropped —
/// whole turns, so the model never sees a reply without its question.
public struct Conversation: Sendable, Equatable {
    public struct Turn: Sendable, Equatable {
        public var user: String
        public var assistant: String
        public init(user: String, assistant: String) {
            self.user = user
            self.assistant = assistant
        }
    }

    /// The prompt for the next reply.
    public struct Prompt: Sendable, Equatable {
        public var text: String
        public var tokens: [TokenID]
        /// Oldest turns removed from the history so that it fits.
        public var droppedTurns: Int
    }

    public var system: String?
    public private(set) var turns: [Turn] = []

    public init(system: String? = nil) {
        self.system = system
    }

    /// Forgets every turn (the system prompt stays).
    public mutating func reset() { turns = [] }

    /// Records a finished turn: the user's message and the reply the model gave.
    public mutating func append(user: String, assistant: String) {
        turns.append(Turn(user: user, assistant: assistant))
    }

    /// The messages of the history from turn `first` on, then `user`.
    public func messages(from first: Int = 0, adding user: String) -> [ChatMessage] {
        var out: [ChatMessage] = []
        if let system { out.append(.system(system)) }
        for t in turns[first...] {
            out.append(.user(t.user))
            out.append(.assistant(t.assistant))
        }
        out.append(.user(user))
        return out
    }

    /// The prompt asking for a reply to `user`: the history that fits in `limit` tokens, newest turns kept. Turns
    /// that do not fit are removed from the history (`droppedTurns` says how many). Throws, changing nothing, when
    /// the system prompt and `user` alone are longer than `limit`.
    public mutating func prompt(for user: String, template: ChatTemplate, tokenizer: Tokenizer,
                                limit: Int) throws(ConversationError) -> Prompt {
        var shortest = 0
        for first in 0...turns.count {
            let segments = template.segments(messages(from: first, adding: user), addGenerationPrompt: true)
            let text = segments.map(\.text).joined()
            // Markup's control tokens only: what the user typed stays text.
            let tokens = tokenizer.encode(segments: segments)
            if tokens.count <= limit {
                turns.removeFirst(first)
                return Prompt(text: text, tokens: tokens, droppedTurns: first)
            }
            shortest = tokens.count
        }
        throw .messageTooLong(tokens: shortest, limit: limit)
    }
}

public enum ConversationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Even without any history the prompt is longer than the context leaves for it.
    case messageTooLong(tokens: Int, limit: Int)

    public var description: String {
        switch self {
        case let .messageTooLong(tokens, limit):
            return "the message is too long: with the chat template it is \(tokens) tokens, and the context leaves "
                + "room for \(limit) (the rest is kept for the reply)"
        }
    }
}
