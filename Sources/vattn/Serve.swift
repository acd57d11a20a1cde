import ArgumentParser
import Engine
import Hummingbird
import Logging
import Model
import Server
import ServiceLifecycle

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics.",
        discussion: """
            One engine serves every request through continuous batching. Streaming responses use server-sent \
            events; a client that disconnects frees its slot at once. SIGINT or SIGTERM stop accepting requests, \
            let the requests in flight finish, then exit.
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

    func run() async throws {
        var logger = Logger(label: "vattn.serve")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let loaded = try options.loadModel()
        _ = try loaded.requireTokenizer(for: "serve")
        let (engine, _) = try options.makeEngine(loaded)
        let metrics = ServerMetrics()
        let service = EngineService(engine: engine, maxWaiting: maxWaiting, metrics: metrics, logger: logger)
        let template: ChatTemplate?
        do { template = try loaded.chatTemplate() } catch {
            logger.warning("no chat template (\(error)): /v1/chat/completions will answer 400")
            template = nil
        }
        let routes = OpenAIRoutes(service: service, metrics: metrics,
                                  configuration: ServerConfiguration(modelName: modelName, chatTemplate: template))
        let (host, port, name) = (self.host, self.port, modelName)
        let banner = "KV \(engine.kv.name), \(options.slots) slots, context \(options.maxContext)"
        let app = makeApplication(routes, host: host, port: port, logger: logger) {
            printErr("vattn serve: model \(name) on http://\(host):\(port) (\(banner))")
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [service, app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
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
