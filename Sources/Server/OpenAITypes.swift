import FoundationEssentials

// Wire types of the OpenAI API subset we serve. Requests are decoded leniently where OpenAI is (`stop` as a string
// or a list, `content` as a string or text parts) and strictly on types: a wrong type is a 400 naming the field.

/// A string or a list of strings (`stop`), or for `prompt` also a list of token ids.
enum StringOrList: Decodable, Sendable {
    case string(String)
    case list([String])
    case tokens([Int])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let l = try? c.decode([String].self) { self = .list(l); return }
        if let t = try? c.decode([Int].self) { self = .tokens(t); return }
        throw DecodingError.typeMismatch(String.self, .init(codingPath: decoder.codingPath,
                                                            debugDescription: "expected a string or a list of strings"))
    }
}

/// An optional integer field. swift-foundation's decoder reports a fractional number (`"top_k": 2.5`) sent for an
/// `Int` as invalid JSON with no field name; this reports it as a type error of the field, like any other.
@propertyWrapper
struct WholeNumber: Decodable, Sendable {
    var wrappedValue: Int?
    init(wrappedValue: Int?) { self.wrappedValue = wrappedValue }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { wrappedValue = nil; return }
        if let i = try? c.decode(Int.self) { wrappedValue = i; return }
        if let d = try? c.decode(Double.self) {
            throw DecodingError.typeMismatch(Int.self, .init(codingPath: decoder.codingPath,
                                                             debugDescription: "expected an integer, got \(d)"))
        }
        wrappedValue = try c.decode(Int.self)  // throws the type mismatch, with the field's path
    }
}

extension KeyedDecodingContainer {
    /// A missing `WholeNumber` field is nil, as a missing `Int?` is.
    func decode(_ type: WholeNumber.Type, forKey key: Key) throws -> WholeNumber {
        try decodeIfPresent(type, forKey: key) ?? WholeNumber(wrappedValue: nil)
    }
}

struct StreamOptions: Decodable, Sendable {
    var include_usage: Bool?
}

/// Fields shared by both endpoints.
protocol GenerationRequest: Sendable {
    var model: String? { get }
    var max_tokens: Int? { get }
    var temperature: Double? { get }
    var top_p: Double? { get }
    /// Not in OpenAI's API: vLLM's extension (sample among the k most likely tokens; -1 or 0: no limit).
    var top_k: Int? { get }
    var seed: Int? { get }
    var n: Int? { get }
    var stop: StringOrList? { get }
    var stream: Bool? { get }
    var stream_options: StreamOptions? { get }
    /// Not in OpenAI's API: vLLM's extension (keep generating past end-of-sequence until `max_tokens`).
    var ignore_eos: Bool? { get }
}

struct ChatMessageIn: Decodable, Sendable {
    var role: String
    var content: Content?

    enum Content: Decodable, Sendable {
        case text(String)
        case parts([Part])
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { self = .text(s); return }
            if let p = try? c.decode([Part].self) { self = .parts(p); return }
            throw DecodingError.typeMismatch(String.self, .init(codingPath: decoder.codingPath,
                                                                debugDescription: "expected a string or a list of text parts"))
        }
    }
    struct Part: Decodable, Sendable {
        var type: String
        var text: String?
    }
}

struct ChatCompletionRequest: Decodable, GenerationRequest {
    var model: String?
    var messages: [ChatMessageIn]?
    @WholeNumber var max_tokens: Int?
    @WholeNumber var max_completion_tokens: Int?
    var temperature: Double?
    var top_p: Double?
    @WholeNumber var top_k: Int?
    @WholeNumber var seed: Int?
    @WholeNumber var n: Int?
    var stop: StringOrList?
    var stream: Bool?
    var stream_options: StreamOptions?
    var ignore_eos: Bool?
}

struct CompletionRequest: Decodable, GenerationRequest {
    var model: String?
    var prompt: StringOrList?
    @WholeNumber var max_tokens: Int?
    var temperature: Double?
    var top_p: Double?
    @WholeNumber var top_k: Int?
    @WholeNumber var seed: Int?
    @WholeNumber var n: Int?
    var stop: StringOrList?
    var stream: Bool?
    var stream_options: StreamOptions?
    var ignore_eos: Bool?
    var echo: Bool?
}

struct Usage: Codable, Sendable, Equatable {
    var prompt_tokens: Int
    var completion_tokens: Int
    var total_tokens: Int
}

/// `{"error": {"message", "type", "param", "code"}}`, with explicit nulls as OpenAI sends them.
struct ErrorBody: Encodable, Sendable {
    struct Detail: Encodable, Sendable {
        var message: String
        var type: String
        var param: String?
        var code: String?
        enum CodingKeys: CodingKey { case message, type, param, code }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(message, forKey: .message)
            try c.encode(type, forKey: .type)
            try c.encode(param, forKey: .param)
            try c.encode(code, forKey: .code)
        }
    }
    var error: Detail
}

struct ChatMessageOut: Encodable, Sendable {
    var role: String
    var content: String
}

struct ChatChoice: Encodable, Sendable {
    var index = 0
    var message: ChatMessageOut
    var finish_reason: String
    enum CodingKeys: CodingKey { case index, message, finish_reason, logprobs }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(index, forKey: .index)
        try c.encode(message, forKey: .message)
        try c.encode(finish_reason, forKey: .finish_reason)
        try c.encodeNil(forKey: .logprobs)
    }
}

struct ChatCompletion: Encodable, Sendable {
    var id: String
    var object = "chat.completion"
    var created: Int
    var model: String
    var choices: [ChatChoice]
    var usage: Usage
}

struct ChatDelta: Encodable, Sendable {
    var role: String?
    var content: String?
}

struct ChatChunkChoice: Encodable, Sendable {
    var index = 0
    var delta: ChatDelta
    var finish_reason: String?
    enum CodingKeys: CodingKey { case index, delta, finish_reason, logprobs }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(index, forKey: .index)
        try c.encode(delta, forKey: .delta)
        try c.encode(finish_reason, forKey: .finish_reason)
        try c.encodeNil(forKey: .logprobs)
    }
}

struct ChatCompletionChunk: Encodable, Sendable {
    var id: String
    var object = "chat.completion.chunk"
    var created: Int
    var model: String
    var choices: [ChatChunkChoice]
    var usage: Usage?
}

struct CompletionChoice: Encodable, Sendable {
    var index = 0
    var text: String
    var finish_reason: String?
    enum CodingKeys: CodingKey { case index, text, finish_reason, logprobs }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(index, forKey: .index)
        try c.encode(text, forKey: .text)
        try c.encode(finish_reason, forKey: .finish_reason)
        try c.encodeNil(forKey: .logprobs)
    }
}

struct Completion: Encodable, Sendable {
    var id: String
    var object = "text_completion"
    var created: Int
    var model: String
    var choices: [CompletionChoice]
    var usage: Usage?
}

/// `GET /health`: 200 while the engine serves, 503 once it is dead.
struct Health: Encodable, Sendable {
    var status: String
    var waiting: Int
    var running: Int
    var error: String?
}

struct ModelCard: Encodable, Sendable {
    var id: String
    var object = "model"
    var created: Int
    var owned_by = "vattn"
    var max_model_len: Int
}

struct ModelList: Encodable, Sendable {
    var object = "list"
    var data: [ModelCard]
}
