import Engine
import FoundationEssentials
import Hummingbird
import Logging
import Model
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// What the routes need besides the engine.
public struct ServerConfiguration: Sendable {
    /// The id clients must send as `model` (and `GET /v1/models` lists).
    public var modelName: String
    /// How chat messages become a prompt; nil: `/v1/chat/completions` answers 400.
    public var chatTemplate: ChatTemplate?
    /// Largest request body accepted; larger is a 413 and the connection is closed.
    public var maxBodyBytes = 4 << 20
    /// Largest stop string, in UTF-8 bytes, and all of a request's stop strings together (each one is matched against
    /// every token's new text); more is a 400 naming `stop`.
    public var maxStopBytes = 1024
    public var maxStopTotalBytes = 2048
    /// Seconds a 429 tells the client to wait (`Retry-After`).
    public var retryAfterSeconds = 1
    /// `max_tokens` when a completions request does not say (OpenAI's default is 16); chat requests default to the
    /// rest of the context.
    public var defaultCompletionTokens = 16
    /// Longest prompt tokenized, in UTF-8 bytes: a completions `prompt`, or a chat's roles and contents together;
    /// longer is a 400 naming `prompt` / `messages`, before any tokenizing. nil: 32 bytes per token of context (8×
    /// the ~4 bytes of an average English token; only text of long runs, like pages of spaces, can fit the context
    /// at more than that). Tokenizing is O(n log n) and off the request handlers' threads; this bounds its cost.
    public var maxPromptBytes: Int?

    public init(modelName: String, chatTemplate: ChatTemplate?) {
        self.modelName = modelName
        self.chatTemplate = chatTemplate
    }
}

/// An OpenAI-style error: the status and `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, Sendable {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    /// Extra response headers (`Retry-After`, `Allow`, `Connection: close`).
    public var headers: HTTPFields = [:]

    static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: code)
    }

    var body: ErrorBody { ErrorBody(error: .init(message: message, type: type, param: param, code: code)) }
    var response: Response {
        var r = jsonResponse(body, status: status)
        for field in headers { r.headers[fields: field.name].append(field) }
        return r
    }
}

func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONEncoder().encode(value)) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
}

func sse(_ value: some Encodable) -> ByteBuffer {
    var b = ByteBuffer(string: "data: ")
    b.writeBytes((try? JSONEncoder().encode(value)) ?? Data("{}".utf8))
    b.writeString("\n\n")
    return b
}

func unixTime() -> Int { Int(time(nil)) }

/// The HTTP side: validates requests, submits them to the engine, answers in OpenAI's shapes.
public struct OpenAIRoutes: Sendable {
    public let service: EngineService
    public let metrics: ServerMetrics
    public let configuration: ServerConfiguration

    public init(service: EngineService, metrics: ServerMetrics, configuration: ServerConfiguration) {
        self.service = service
        self.metrics = metrics
        self.configuration = configuration
    }

    /// The routes and their methods: another method on one of these paths is a 405 with `Allow`, any other path a
    /// 404, both with a JSON error body.
    static let routes: [String: HTTPRequest.Method] = [
        "/health": .get, "/v1/models": .get, "/metrics": .get, "/v1/chat/completions": .post, "/v1/completions": .post,
    ]

    public func register(on router: Router<ServerRequestContext>) {
        router.add(middleware: UnroutedErrors(routes: Self.routes))
        router.get("/health") { _, _ -> Response in
            let s = service.snapshot
            if let reason = service.deathReason {
                return jsonResponse(Health(status: "dead", waiting: s.waiting, running: s.running, error: reason),
                                    status: .serviceUnavailable)
            }
            if service.isShuttingDown {  // draining: a load balancer should send new requests elsewhere
                return jsonResponse(Health(status: "shutting_down", waiting: s.waiting, running: s.running),
                                    status: .serviceUnavailable)
            }
            return jsonResponse(Health(status: "ok", waiting: s.waiting, running: s.running))
        }
        router.get("/v1/models") { _, _ -> Response in
            jsonResponse(ModelList(data: [ModelCard(id: configuration.modelName, created: unixTime(),
                                                    max_model_len: service.maxContext)]))
        }
        router.get("/metrics") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.render())))
        }
        router.post("/v1/chat/completions") { request, context -> Response in
            await respond("chat") { try await chat(request, context) }
        }
        router.post("/v1/completions") { request, context -> Response in
            await respond("completions") { try await completions(request, context) }
        }
    }

    private func respond(_ endpoint: String, _ body: () async throws -> Response) async -> Response {
        let response: Response
        do {
            response = try await body()
        } catch let e as APIError {
            response = e.response
        } catch {
            response = APIError(status: .internalServerError, message: "\(error)", type: "server_error").response
        }
        metrics.request(endpoint: endpoint, status: response.status.code)
        return response
    }

    // MARK: Decoding and validation

    private func decode<T: Decodable>(_: T.Type, _ request: Request, _ context: ServerRequestContext) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: configuration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            // The rest of the body is not read: the connection ends after the answer (`ConnectionGuard`).
            throw APIError(status: .contentTooLarge, message: "request body larger than \(configuration.maxBodyBytes) bytes",
                           type: "invalid_request_error", headers: [.connection: "close"])
        } catch {
            if !context.channel.isActive {  // closed while its body arrived (its client left, or a read timeout)
                throw APIError(status: .init(code: 499, reasonPhrase: "Client Closed Request"),
                               message: "the connection closed before the request body arrived", type: "invalid_request_error")
            }
            throw APIError.invalid("could not read the request body: \(error)", code: "invalid_body")
        }
        return try Self.decodeJSON(T.self, from: Data(buffer.readableBytesView))
    }

    /// A request body as `T`, or an `APIError` (400) naming the parameter that is wrong. Never anything else: the fuzz
    /// target `vattn-fuzz request` holds it to that.
    static func decodeJSON<T: Decodable>(_: T.Type, from data: Data) throws -> T {
        do {
            // A key given twice: the last one counts, as in Python's json (and so vLLM); Foundation keeps the first.
            return try JSONDecoder().decode(T.self, from: lastKeyWins(data) ?? data)
        } catch let DecodingError.typeMismatch(type, ctx) {
            let param = Self.path(ctx.codingPath)
            throw APIError.invalid("'\(param)' has the wrong type: expected \(Self.typeName(type))", param: param,
                                   code: "invalid_type")
        } catch let DecodingError.valueNotFound(type, ctx) {
            let param = Self.path(ctx.codingPath)
            throw APIError.invalid("'\(param)' is null: expected \(Self.typeName(type))", param: param, code: "invalid_type")
        } catch let DecodingError.keyNotFound(key, ctx) {
            let param = Self.path(ctx.codingPath + [key])
            throw APIError.invalid("missing required parameter '\(param)'", param: param, code: "missing_required_parameter")
        } catch let DecodingError.dataCorrupted(ctx) where !ctx.codingPath.isEmpty {
            let param = Self.path(ctx.codingPath)
            throw APIError.invalid("'\(param)': \(ctx.debugDescription)", param: param, code: "invalid_value")
        } catch {
            throw APIError.invalid("the body is not valid JSON (\(data.isEmpty ? "empty body" : "parse error"))",
                                   code: "invalid_json")
        }
    }

    static func path(_ keys: [any CodingKey]) -> String {
        var out = ""
        for k in keys {
            if let i = k.intValue { out += "[\(i)]" } else { out += (out.isEmpty ? "" : ".") + k.stringValue }
        }
        return out
    }

    static func typeName(_ t: Any.Type) -> String {
        switch t {
        case is String.Type: return "a string"
        case is Int.Type: return "an integer"
        case is Double.Type: return "a number"
        case is Bool.Type: return "a boolean"
        default:
            let s = String(describing: t)
            return s.hasPrefix("Array") ? "a list" : s.contains("Dictionary") || s.hasSuffix("In") || s.hasSuffix("Options") ? "an object" : s
        }
    }

    struct Plan {
        var parameters: SamplingParameters
        var stream: Bool
        var includeUsage: Bool
    }

    /// The checks shared by both endpoints, in the order OpenAI's server makes them (model first).
    private func checkModel(_ r: some GenerationRequest) throws {
        guard let model = r.model else {
            throw APIError.invalid("you must provide a model parameter", param: "model", code: "missing_required_parameter")
        }
        guard model == configuration.modelName else {
            throw APIError(status: .notFound, message: "the model '\(model)' does not exist; this server has '\(configuration.modelName)'",
                           type: "invalid_request_error", param: "model", code: "model_not_found")
        }
        if let n = r.n, n != 1 {
            throw APIError.invalid("only n = 1 is supported", param: "n", code: "invalid_value")
        }
    }

    private func plan(_ r: some GenerationRequest, maxTokens: Int?, promptTokens: Int, promptParam: String,
                      defaultMax: Int) throws -> Plan {
        let context = service.maxContext
        guard promptTokens < context else {
            throw APIError.invalid("this model's maximum context length is \(context) tokens; the prompt has \(promptTokens)",
                                   param: promptParam, code: "context_length_exceeded")
        }
        let room = context - promptTokens
        var p = SamplingParameters(temperature: 1, topP: 1, maxTokens: min(defaultMax, room))
        if let m = maxTokens {
            guard m >= 1 else {
                throw APIError.invalid("max_tokens must be at least 1, got \(m)", param: "max_tokens", code: "invalid_value")
            }
            guard m <= room else {
                throw APIError.invalid("this model's maximum context length is \(context) tokens; the prompt has \(promptTokens) "
                                       + "and max_tokens asks for \(m) more", param: "max_tokens",
                                       code: "context_length_exceeded")
            }
            p.maxTokens = m
        }
        if let t = r.temperature {
            guard t >= 0 && t <= 2 else {
                throw APIError.invalid("temperature must be between 0 and 2, got \(t)", param: "temperature", code: "invalid_value")
            }
            p.temperature = Float(t)
        }
        if let tp = r.top_p {
            guard tp > 0 && tp <= 1 else {
                throw APIError.invalid("top_p must be in (0, 1], got \(tp)", param: "top_p", code: "invalid_value")
            }
            p.topP = Float(tp)
        }
        if let k = r.top_k {
            guard k >= -1 else {
                throw APIError.invalid("top_k must be a number of tokens (1 or more), or -1 or 0 for no limit; got \(k)",
                                       param: "top_k", code: "invalid_value")
            }
            p.topK = max(k, 0)
        }
        if let s = r.seed { p.seed = UInt64(bitPattern: Int64(s)) }
        p.ignoreEOS = r.ignore_eos ?? false
        switch r.stop {
        case nil: break
        case .string(let s)?: p.stop = s.isEmpty ? [] : [s]
        case .list(let l)?:
            guard l.count <= 4 else {
                throw APIError.invalid("stop takes at most 4 strings", param: "stop", code: "invalid_value")
            }
            p.stop = l.filter { !$0.isEmpty }
        case .tokens?:
            throw APIError.invalid("'stop' has the wrong type: expected a string or a list of strings", param: "stop",
                                   code: "invalid_type")
        }
        if let long = p.stop.first(where: { $0.utf8.count > configuration.maxStopBytes }) {
            throw APIError.invalid("a stop string may have at most \(configuration.maxStopBytes) bytes (UTF-8); one has "
                                   + "\(long.utf8.count)", param: "stop", code: "invalid_value")
        }
        let stopBytes = p.stop.reduce(0) { $0 + $1.utf8.count }
        guard stopBytes <= configuration.maxStopTotalBytes else {
            throw APIError.invalid("the stop strings may have at most \(configuration.maxStopTotalBytes) bytes (UTF-8) "
                                   + "together; these have \(stopBytes)", param: "stop", code: "invalid_value")
        }
        let stream = r.stream ?? false
        return Plan(parameters: p, stream: stream, includeUsage: stream && (r.stream_options?.include_usage ?? false))
    }

    private func submit(_ prompt: [TokenID], _ parameters: SamplingParameters) throws -> Generation {
        do {
            let g = try service.submit(prompt: prompt, parameters: parameters)
            metrics.requests.increment()
            metrics.promptTokens.increment(by: prompt.count)
            return g
        } catch let e as QueueFull {
            metrics.rejected.increment()
            throw APIError(status: .tooManyRequests,
                           message: "the server is busy: \(e.waiting) requests are already waiting for a slot; retry later",
                           type: "rate_limit_error", param: nil, code: "queue_full",
                           headers: [.retryAfter: "\(configuration.retryAfterSeconds)"])
        } catch is ShuttingDown {
            throw APIError(status: .serviceUnavailable, message: "the server is shutting down", type: "server_error")
        } catch let e as EngineDead {
            throw APIError(status: .serviceUnavailable, message: e.description, type: "server_error", code: "engine_dead")
        }
    }

    /// The tokenizer, or a 400 naming `param` for a model that has none (dummy weights take token ids only).
    private func tokenizer(for param: String) throws -> Tokenizer {
        guard let t = service.tokenizer else {
            throw APIError.invalid("this model has no tokenizer (dummy weights): send the prompt as a list of token ids "
                                   + "to /v1/completions", param: param, code: "no_tokenizer")
        }
        return t
    }

    /// Tokenizes a prompt of `bytes` UTF-8 bytes with `encode`, once it is known to be within `maxPromptBytes` (a
    /// 400 naming `param` if not), on a Dispatch queue: never on the cooperative pool that runs every handler.
    private func encodePrompt(bytes: Int, param: String,
                              _ encode: @escaping @Sendable (Tokenizer) -> [TokenID]) async throws -> [TokenID] {
        let tokenizer = try tokenizer(for: param)
        let limit = configuration.maxPromptBytes ?? 32 * service.maxContext
        guard bytes <= limit else {
            throw APIError.invalid("the prompt is \(bytes) bytes; this server tokenizes at most \(limit) (its context is "
                                   + "\(service.maxContext) tokens)", param: param, code: "context_length_exceeded")
        }
        return await offloaded { encode(tokenizer) }
    }

    // MARK: Endpoints

    private func chat(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let r = try await decode(ChatCompletionRequest.self, request, context)
        try checkModel(r)
        guard let template = configuration.chatTemplate else {
            throw APIError.invalid("this model has no chat template: use /v1/completions", code: "no_chat_template")
        }
        guard let messages = r.messages else {
            throw APIError.invalid("missing required parameter 'messages'", param: "messages", code: "missing_required_parameter")
        }
        guard !messages.isEmpty else {
            throw APIError.invalid("'messages' must not be empty", param: "messages", code: "invalid_value")
        }
        var chat: [ChatMessage] = []
        for (i, m) in messages.enumerated() {
            guard ["system", "user", "assistant", "developer"].contains(m.role) else {
                throw APIError.invalid("messages[\(i)].role must be system, user or assistant; got '\(m.role)'",
                                       param: "messages[\(i)].role", code: "invalid_value")
            }
            let text: String
            switch m.content {
            case .text(let s)?: text = s
            case .parts(let parts)?:
                guard parts.allSatisfy({ $0.type == "text" && $0.text != nil }) else {
                    throw APIError.invalid("only text content parts are supported", param: "messages[\(i)].content",
                                           code: "invalid_value")
                }
                text = parts.compactMap(\.text).joined()
            case nil:
                throw APIError.invalid("messages[\(i)].content is missing", param: "messages[\(i)].content",
                                       code: "missing_required_parameter")
            }
            chat.append(ChatMessage(role: m.role == "developer" ? "system" : m.role, content: text))
        }
        // The template's markup has control tokens; the messages are text however they are spelled (issue 14).
        let prompt = try await encodePrompt(bytes: chat.reduce(0) { $0 + $1.role.utf8.count + $1.content.utf8.count },
                                            param: "messages") { [chat] in
            template.encode(chat, addGenerationPrompt: true, tokenizer: $0)
        }
        let plan = try plan(r, maxTokens: r.max_completion_tokens ?? r.max_tokens, promptTokens: prompt.count,
                            promptParam: "messages", defaultMax: Int.max)
        let generation = try submit(prompt, plan.parameters)
        let id = "chatcmpl-\(generation.ticket)", created = unixTime(), model = configuration.modelName
        let chunk: @Sendable (ChatDelta, String?) -> ChatCompletionChunk = { delta, finish in
            ChatCompletionChunk(id: id, created: created, model: model,
                                choices: [ChatChunkChoice(delta: delta, finish_reason: finish)])
        }
        return try await respond(
            generation, promptTokens: prompt.count, plan: plan, context: context,
            body: { text, usage, finish in
                ChatCompletion(id: id, created: created, model: model,
                               choices: [ChatChoice(message: ChatMessageOut(role: "assistant", content: text),
                                                    finish_reason: finish.rawValue)],
                               usage: usage)
            },
            opening: [chunk(ChatDelta(role: "assistant", content: ""), nil)],
            chunks: { e in
                (e.text.isEmpty ? [] : [chunk(ChatDelta(content: e.text), nil)])
                    + (e.finished.map { [chunk(ChatDelta(), $0.rawValue)] } ?? [])
            },
            usageChunk: { ChatCompletionChunk(id: id, created: created, model: model, choices: [], usage: $0) })
    }

    private func completions(_ request: Request, _ context: ServerRequestContext) async throws -> Response {
        let r = try await decode(CompletionRequest.self, request, context)
        try checkModel(r)
        let prompt: [TokenID]
        switch r.prompt {
        case nil:
            throw APIError.invalid("missing required parameter 'prompt'", param: "prompt", code: "missing_required_parameter")
        case .string(let s)?:
            prompt = s.isEmpty ? [] : try await encodePrompt(bytes: s.utf8.count, param: "prompt") {
                $0.encode(s, addSpecial: true, parseSpecial: false)
            }
        case .list(let l)?:
            guard l.count <= 1 else {
                throw APIError.invalid("only one prompt per request is supported", param: "prompt", code: "invalid_value")
            }
            prompt = (l.first ?? "").isEmpty ? [] : try await encodePrompt(bytes: l[0].utf8.count, param: "prompt") {
                $0.encode(l[0], addSpecial: true, parseSpecial: false)
            }
        case .tokens(let t)?:
            let vocab = service.vocabularySize
            guard t.allSatisfy({ $0 >= 0 && $0 < vocab }) else {
                throw APIError.invalid("prompt token ids must be in 0..<\(vocab)", param: "prompt", code: "invalid_value")
            }
            prompt = t.map { TokenID($0) }
        }
        guard !prompt.isEmpty else {
            throw APIError.invalid("'prompt' must not be empty", param: "prompt", code: "invalid_value")
        }
        let plan = try plan(r, maxTokens: r.max_tokens, promptTokens: prompt.count, promptParam: "prompt",
                            defaultMax: configuration.defaultCompletionTokens)
        let generation = try submit(prompt, plan.parameters)
        let id = "cmpl-\(generation.ticket)", created = unixTime(), model = configuration.modelName
        let echo: String
        if r.echo == true, case .string(let s)? = r.prompt { echo = s } else { echo = "" }
        let chunk: @Sendable (String, String?) -> Completion = { text, finish in
            Completion(id: id, created: created, model: model,
                       choices: [CompletionChoice(text: text, finish_reason: finish)])
        }
        return try await respond(
            generation, promptTokens: prompt.count, plan: plan, context: context,
            body: { text, usage, finish in
                Completion(id: id, created: created, model: model,
                           choices: [CompletionChoice(text: echo + text, finish_reason: finish.rawValue)], usage: usage)
            },
            opening: echo.isEmpty ? [] : [chunk(echo, nil)],
            // Without a tokenizer every token is a chunk of empty text, so clients still see each one arrive.
            chunks: { [hasText = service.tokenizer != nil] e in
                e.text.isEmpty && e.finished == nil && hasText ? [] : [chunk(e.text, e.finished?.rawValue)]
            },
            usageChunk: { Completion(id: id, created: created, model: model, choices: [], usage: $0) })
    }

    /// Answers one accepted generation, for both endpoints: without `stream`, one JSON body made by `body` from the
    /// collected text; with it, server-sent events — the `opening` chunks, `chunks(event)` for every engine event,
    /// a usage chunk when the client asked for one, then `[DONE]`. A client that leaves cancels the generation.
    private func respond<Body: Encodable, Chunk: Encodable & Sendable>(
        _ generation: Generation, promptTokens: Int, plan: Plan, context: ServerRequestContext,
        body: (_ text: String, _ usage: Usage, _ finish: FinishReason) -> Body,
        opening: [Chunk], chunks: @escaping @Sendable (EngineEvent) -> [Chunk],
        usageChunk: @escaping @Sendable (Usage) -> Chunk
    ) async throws -> Response {
        let usage: @Sendable (Int) -> Usage = { tokens in
            Usage(prompt_tokens: promptTokens, completion_tokens: tokens, total_tokens: promptTokens + tokens)
        }
        context.onDisconnect { [service] in service.cancel(generation.ticket) }
        if !plan.stream {
            let result = try await collect(generation)
            guard let finish = result.finish else { throw unfinished(context) }
            return jsonResponse(body(result.text, usage(result.tokens), finish))
        }
        let service = self.service
        let includeUsage = plan.includeUsage
        return sseResponse { writer in
            defer { service.cancel(generation.ticket) }
            for c in opening { try await writer.write(sse(c)) }
            var tokens = 0
            do {
                for try await e in generation.events {
                    tokens += e.tokens.count
                    for c in chunks(e) { try await writer.write(sse(c)) }
                }
            } catch let failure as GenerationFailure {
                // The status line went out long ago: the error is an event of its own, and the stream ends without
                // `[DONE]`, so no client mistakes it for a complete answer (vLLM sends the same shape).
                try await writer.write(sse(Self.apiError(failure).body))
                return
            }
            if includeUsage { try await writer.write(sse(usageChunk(usage(tokens)))) }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
        }
    }

    /// How a request that failed after it was accepted is answered.
    static func apiError(_ failure: GenerationFailure) -> APIError {
        switch failure.kind {
        case .engineFault:
            return APIError(status: .internalServerError, message: failure.message, type: "server_error",
                            code: "engine_error")
        case .shuttingDown:
            return APIError(status: .serviceUnavailable, message: failure.message, type: "server_error",
                            code: "shutting_down")
        case .refused:
            return APIError.invalid(failure.message, code: "invalid_value")
        }
    }

    /// A generation that ended without finishing: its client went away (nobody reads the answer; nginx's 499 keeps
    /// it out of the 5xx counts in /metrics), or the engine stopped (503).
    private func unfinished(_ context: ServerRequestContext) -> APIError {
        if !context.channel.isActive {
            return APIError(status: .init(code: 499, reasonPhrase: "Client Closed Request"),
                            message: "the client closed the connection", type: "invalid_request_error")
        }
        return APIError(status: .serviceUnavailable, message: "the request was ended before it finished",
                        type: "server_error")
    }

    private func collect(_ g: Generation) async throws -> (text: String, tokens: Int, finish: FinishReason?) {
        var text = "", tokens = 0
        var finish: FinishReason?
        // Leaving the loop early (the handler's task cancelled) ends the stream, which cancels the request.
        do {
            for try await e in g.events {
                text += e.text
                tokens += e.tokens.count
                if let f = e.finished { finish = f }
            }
        } catch let failure as GenerationFailure {
            throw Self.apiError(failure)
        }
        if finish == nil { service.cancel(g.ticket) }
        return (text, tokens, finish)
    }

    private func sseResponse(_ body: @escaping @Sendable (inout any ResponseBodyWriter) async throws -> Void) -> Response {
        Response(status: .ok,
                 headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                 body: ResponseBody { writer in
                     try await body(&writer)
                     try await writer.finish(nil)
                 })
    }
}

/// Gives requests no route answered: a path served with another method is a 405 with `Allow`, an unknown path a 404,
/// both with an OpenAI-style JSON error body (Hummingbird's own are empty).
struct UnroutedErrors: RouterMiddleware {
    typealias Context = ServerRequestContext
    let routes: [String: HTTPRequest.Method]

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound {
            let path = request.uri.path
            if let method = routes[path] {
                return APIError(status: .methodNotAllowed,
                                message: "\(path) takes \(method.rawValue), not \(request.method.rawValue)",
                                type: "invalid_request_error", code: "method_not_allowed",
                                headers: [.allow: method.rawValue]).response
            }
            return APIError(status: .notFound, message: "no route for \(request.method.rawValue) \(path)",
                            type: "invalid_request_error", code: "not_found").response
        }
    }
}
