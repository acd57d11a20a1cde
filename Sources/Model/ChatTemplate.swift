/// One chat message.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
    public static func system(_ s: String) -> ChatMessage { ChatMessage(role: "system", content: s) }
    public static func user(_ s: String) -> ChatMessage { ChatMessage(role: "user", content: s) }
    public static func assistant(_ s: String) -> ChatMessage { ChatMessage(role: "assistant", content: s) }
}

public enum ChatTemplateError: Error, Equatable, Sendable, CustomStringConvertible {
    case missing
    case unrecognized(excerpt: String)

    public var description: String {
        switch self {
        case .missing:
            return "chat template: the model has no tokenizer.chat_template"
        case .unrecognized(let e):
            return "chat template: unrecognized template (supported: ChatML, Llama-3): \(e)"
        }
    }
}

/// The chat formats we can render, recognised from the GGUF `tokenizer.chat_template` (Jinja) text
/// the way llama.cpp does (by its marker tokens), never guessed.
public enum ChatTemplate: Sendable, Equatable {
    /// `<|im_start|>role\ncontent<|im_end|>\n` … ; `defaultSystemPrompt` is inserted when the first
    /// message is not a system message and the template says so (SmolLM2 does).
    case chatML(defaultSystemPrompt: String?)
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` (content trimmed, as llama.cpp).
    case llama3

    /// Recognises a Jinja template, or the names "chatml" / "llama3".
    public init(template: String) throws {
        if template == "chatml" { self = .chatML(defaultSystemPrompt: nil); return }
        if template == "llama3" { self = .llama3; return }
        if template.contains("<|start_header_id|>") && template.contains("<|end_header_id|>")
            && template.contains("<|eot_id|>") {
            self = .llama3
            return
        }
        if template.contains("<|im_start|>") && template.contains("<|im_end|>") && !template.contains("<|im_sep|>") {
            self = .chatML(defaultSystemPrompt: ChatTemplate.defaultSystemPrompt(in: template))
            return
        }
        let excerpt = String(template.prefix(80))
        throw ChatTemplateError.unrecognized(excerpt: excerpt)
    }

    /// From the model file's `tokenizer.chat_template`.
    public init(file: GGUFFile) throws {
        guard let t = file["tokenizer.chat_template"]?.stringValue else { throw ChatTemplateError.missing }
        try self.init(template: t)
    }

    /// Finds `'<|im_start|>system\n…<|im_end|>\n'` emitted under `messages[0]['role'] != 'system'`.
    static func defaultSystemPrompt(in t: String) -> String? {
        guard t.contains("messages[0]['role'] != 'system'") || t.contains("messages[0].role != 'system'") else { return nil }
        let marker = "<|im_start|>system\n"
        guard let a = t.range(of: marker), let b = t[a.upperBound...].range(of: "<|im_end|>") else { return nil }
        let s = String(t[a.upperBound..<b.lowerBound])
        // A literal prompt only (no Jinja expressions inside).
        if s.contains("{{") || s.contains("{%") || s.contains("'") || s.contains("+") { return nil }
        return s
    }

    /// Renders the conversation; with `addGenerationPrompt` the assistant header is appended. For display: a
    /// prompt is tokenized from `segments`, or with `encode`, so that content cannot forge control tokens.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        segments(messages, addGenerationPrompt: addGenerationPrompt).map(\.text).joined()
    }

    /// The rendering in pieces: the template's markup (`parseSpecial` true: its `<|im_start|>` are control
    /// tokens) and what the caller supplied — roles and message content — as plain text, so a message that spells
    /// `<|im_end|>` or `<|im_start|>system` is text to the model, not a turn (as vLLM and llama-server keep it).
    public func segments(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> [TextSegment] {
        var out: [TextSegment] = []
        switch self {
        case .chatML(let def):
            if let def, let first = messages.first, first.role != "system" {
                out.append(.markup("<|im_start|>system\n\(def)<|im_end|>\n"))
            }
            for m in messages {
                out += [.markup("<|im_start|>"), .content(m.role), .markup("\n"), .content(m.content),
                        .markup("<|im_end|>\n")]
            }
            if addGenerationPrompt { out.append(.markup("<|im_start|>assistant\n")) }
        case .llama3:
            for m in messages {
                out += [.markup("<|start_header_id|>"), .content(m.role), .markup("<|end_header_id|>\n\n"),
                        .content(ChatTemplate.trim(m.content)), .markup("<|eot_id|>")]
            }
            if addGenerationPrompt { out.append(.markup("<|start_header_id|>assistant<|end_header_id|>\n\n")) }
        }
        return out
    }

    /// The prompt's token ids: markup with its control tokens, content as text (`Tokenizer.encode(segments:)`).
    public func encode(_ messages: [ChatMessage], addGenerationPrompt: Bool, tokenizer: Tokenizer) -> [TokenID] {
        tokenizer.encode(segments: segments(messages, addGenerationPrompt: addGenerationPrompt), addSpecial: false)
    }

    static func trim(_ s: String) -> String {
        let ws: Set<Character> = [" ", "\t", "\n", "\r", "\u{0B}", "\u{0C}"]
        var sub = Substring(s)
        while let f = sub.first, ws.contains(f) { sub = sub.dropFirst() }
        while let l = sub.last, ws.contains(l) { sub = sub.dropLast() }
        return String(sub)
    }
}

extension String {
    /// Plain substring search (no Foundation).
    func range(of needle: String) -> Range<String.Index>? { self[...].range(of: needle) }
}

extension Substring {
    func range(of needle: String) -> Range<String.Index>? {
        guard !needle.isEmpty else { return startIndex..<startIndex }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) {
                return i..<self.index(i, offsetBy: needle.count)
            }
            i = index(after: i)
        }
        return nil
    }
}
