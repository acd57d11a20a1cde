import ArgumentParser
import Engine
import Hummingbird
import Logging
import Model
import Server
import ServiceLifecycle
import Support
import UnixSignals
#if canImport(Glibc)
import Glibc
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics.",
        discussion: """
            One engine serves every request through continuous batching. Streaming responses use server-sent \
            events; a client that disconnects frees its slot at once. SIGINT or SIGTERM stop accepting requests, \
            let the requests in flight finish (at most --drain-timeout seconds; then they end with an error), then \
            exit; a second signal exits at once. An engine fault that leaves the device unusable ends every request \
            with an error, turns /health to 503, and the process exits with status 1 once the server has drained. \
            With --dummy-weights (no tokenizer) prompts are token ids and answers carry no text.
            """)

    @OptionGroup var options: ModelOptions
    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"
    @Option(help: "Port to listen on.")
    var port = 8080
    @Option(help: "Requests that may wait for a slot; more are answered 429.")
    var maxWaiting = 64
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"
    @Option(help: "Seconds a shutdown waits for the requests in flight before it ends them with an error.")
    var drainTimeout = 30.0
    @Option(help: "Seconds a connection may sit idle (between requests, or with a request that stopped arriving) before it is closed; 0: never.")
    var idleTimeout = 60.0
    @Option(help: "Seconds a request's body may take to arrive after its head before the connection is closed; 0: no limit.")
    var readTimeout = 60.0

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be between 1 and 65535, got \(port)") }
        guard maxWaiting >= 0 else { throw ValidationError("--max-waiting must be ≥ 0, got \(maxWaiting)") }
        guard drainTimeout >= 0 && drainTimeout.isFinite else {
            throw ValidationError("--drain-timeout must be a number of seconds ≥ 0, got \(drainTimeout)")
        }
        for (name, value) in [("--idle-timeout", idleTimeout), ("--read-timeout", readTimeout)] {
            guard value >= 0 && value.isFinite else {
                throw ValidationError("\(name) must be a number of seconds ≥ 0 (0: no limit), got \(value)")
            }
        }
    }

    func run() async throws {
        var logger = Logger(label: "vattn.serve")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        try checkCanListen(host: host, port: port)  // a port in use is said now, not after the model has loaded
        let builder = options.engineBuilder()
        let loaded = try builder.loadModel()
        let engine = try builder.build(loaded).engine
        let metrics = ServerMetrics()
        let service = EngineService(engine: engine, maxWaiting: maxWaiting, metrics: metrics, logger: logger)
        let template: ChatTemplate?
        if loaded.tokenizer == nil {
            logger.notice("\(loaded.name) has no tokenizer: prompts are token ids (/v1/completions), answers carry no text")
            template = nil
        } else {
            do { template = try loaded.chatTemplate() } catch {
                logger.warning("no chat template (\(error)): /v1/chat/completions will answer 400")
                template = nil
            }
        }
        let routes = OpenAIRoutes(service: service, metrics: metrics,
                                  configuration: ServerConfiguration(modelName: modelName, chatTemplate: template))
        let (host, port, name) = (self.host, self.port, modelName)
        let banner = "KV \(engine.kv.name), \(options.slots) slots, context \(engine.kv.maxContext)"
        let limits = ConnectionLimits(idleTimeout: idleTimeout > 0 ? .seconds(idleTimeout) : nil,
                                      readTimeout: readTimeout > 0 ? .seconds(readTimeout) : nil)
        let app = makeApplication(routes, host: host, port: port, logger: logger, limits: limits) {
            printErr("vattn serve: model \(name) on http://\(host):\(port) (\(banner))")
        }
        // The engine ends first, on a shutdown signal once it has drained, or when it dies: either way the HTTP side
        // then shuts down gracefully; a dead engine makes `run` rethrow: exit status 1.
        var configuration = ServiceGroupConfiguration(
            services: [.init(service: service, successTerminationBehavior: .gracefullyShutdownGroup,
                             failureTerminationBehavior: .gracefullyShutdownGroup),
                       .init(service: app)],
            logger: logger)
        configuration.maximumGracefulShutdownDuration = .seconds(drainTimeout + 10)  // a backstop: then cancel
        let group = ServiceGroup(configuration: configuration)
        let drainLimit = Duration.seconds(drainTimeout)
        let signals = Task {
            var seen = 0
            for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                seen += 1
                if seen > 1 {
                    printErr("vattn serve: second \(signal): exiting now, without draining")
                    // _exit, not exit: exit's atexit handlers tear the CUDA driver down under the engine thread's
                    // feet (SIGSEGV on the H200); nothing here is left buffered.
                    _exit(1)
                }
                // The engine drains, then ends; its end shuts the HTTP side down gracefully (configured above).
                let n = service.beginShutdown(drainLimit: drainLimit)
                printErr("vattn serve: \(signal): draining \(n) requests (at most \(drainTimeout) s; "
                         + "a second signal exits at once)")
            }
        }
        defer { signals.cancel() }
        try await group.run()
        printErr("vattn serve: stopped")
    }

    /// The id clients send as `model`: the short name, a .gguf file's name without the extension, or an HF
    /// directory's name.
    var modelName: String {
        var m = options.model
        if m.hasSuffix("/config.json") { m.removeLast("/config.json".count) }
        while m.count > 1 && m.hasSuffix("/") { m.removeLast() }
        guard m.contains("/") || m.hasSuffix(".gguf") else { return m }
        let base = m.split(separator: "/").last.map(String.init) ?? m
        return base.hasSuffix(".gguf") ? String(base.dropLast(5)) : base
    }
}
