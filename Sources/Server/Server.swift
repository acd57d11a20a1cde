import Hummingbird
import Logging

/// The router of the OpenAI-compatible server: `GET /health`, `GET /v1/models`, `GET /metrics`,
/// `POST /v1/completions`, `POST /v1/chat/completions`.
public func makeRouter(_ routes: OpenAIRoutes) -> Router<ServerRequestContext> {
    let router = Router(context: ServerRequestContext.self)
    routes.register(on: router)
    return router
}

/// The HTTP server for `routes` on `host:port`. Run it in a `ServiceGroup` after the `EngineService`, so that on a
/// graceful shutdown the server stops accepting and drains its in-flight streams before the engine stops.
/// `limits`: per-connection timeouts and sizes (`ConnectionLimits`).
public func makeApplication(_ routes: OpenAIRoutes, host: String, port: Int, logger: Logger,
                            limits: ConnectionLimits = ConnectionLimits(),
                            onServerRunning: @escaping @Sendable () async -> Void = {})
    -> some ApplicationProtocol
{
    Application(router: makeRouter(routes),
                server: .guardedHTTP1(limits),
                configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "vattn"),
                onServerRunning: { _ in await onServerRunning() },
                logger: logger)
}
