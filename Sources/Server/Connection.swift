import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// What one connection may cost the server: how long it may sit idle, how long a request may take to arrive, how
/// large its head may be. A client over a limit is answered (when it can still read an answer) and disconnected.
public struct ConnectionLimits: Sendable {
    /// A connection with nothing to do this long is closed: idle between requests, or a request whose head or body
    /// stopped arriving (Hummingbird's idle timeout: any part of the request read restarts it). A response being
    /// computed or streamed never times out. nil: no limit.
    public var idleTimeout: Duration?
    /// A request's body must have arrived this long after its head (a client trickling a body a byte at a time resets
    /// the idle timeout; this one it does not). nil: no limit.
    public var readTimeout: Duration?
    /// After a response that ends the connection (the client asked for that, an HTTP/1.0 client, a 400 for a
    /// malformed or oversized head, a 413), the server stops sending, then reads and discards what the client still
    /// sends for at most this long — so the client gets to read the answer instead of a reset — and closes.
    public var lingerTimeout: Duration
    /// The request line and headers together, in bytes; larger is a 400 and the connection is closed.
    public var maxHeaderBytes: Int

    public static let defaultIdleTimeout = Duration.seconds(60)
    public static let defaultReadTimeout = Duration.seconds(60)

    public init(idleTimeout: Duration? = defaultIdleTimeout, readTimeout: Duration? = defaultReadTimeout,
                lingerTimeout: Duration = .seconds(2), maxHeaderBytes: Int = 80 * 1024) {
        self.idleTimeout = idleTimeout
        self.readTimeout = readTimeout
        self.lingerTimeout = lingerTimeout
        self.maxHeaderBytes = maxHeaderBytes
    }
}

extension TimeAmount {
    init(limit d: Duration) {
        let (s, atto) = d.components
        self = .nanoseconds(s * 1_000_000_000 + atto / 1_000_000_000)
    }
}

/// Hummingbird's HTTP/1 channel (its idle timeout, header limits, graceful quiescing) with `ConnectionGuard` put
/// between NIO's HTTP/1 codec and the HTTP-types conversion, where the request's HTTP version is still known.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let inner: HTTP1Channel
    let limits: ConnectionLimits

    init(responder: @escaping HTTPChannelHandler.Responder, limits: ConnectionLimits) {
        self.limits = limits
        var decoder = HTTP1Channel.Configuration.DecoderConfiguration()
        decoder.maxHeaderListSize = limits.maxHeaderBytes
        decoder.maxHeaderFieldSize = limits.maxHeaderBytes
        inner = HTTP1Channel(
            responder: responder,
            configuration: .init(additionalChannelHandlers: [CloseOnInputClosed()],
                                 idleTimeout: limits.idleTimeout.map { TimeAmount(limit: $0) },
                                 httpDecoderConfiguration: decoder))
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let limits = self.limits
        return inner.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let ops = channel.pipeline.syncOperations
            let decoder = try ops.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try ops.addHandler(ConnectionGuard(limits: limits), position: .after(decoder))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1 with `ConnectionLimits`.
    static func guardedHTTP1(_ limits: ConnectionLimits) -> HTTPServerBuilder {
        .init { responder in GuardedHTTP1Channel(responder: responder, limits: limits) }
    }
}

/// The connection rules Hummingbird leaves to the application:
///
/// - the request's HTTP version is answered in kind: an HTTP/1.0 response carries `Connection: keep-alive` only when
///   the client asked for it and the body has a length (a streamed body is ended by closing);
/// - a request without keep-alive (`Connection: close`, or HTTP/1.0 without `keep-alive`), a response that says
///   `Connection: close` (Hummingbird's 400 for a malformed head, the server's 413), or a response sent before the
///   request's body finished arriving ends the connection once it is written: output is shut, what the client still
///   sends is read and dropped for at most `lingerTimeout`, then the socket is closed — it is never left half-open;
/// - a request body must arrive within `readTimeout` of its head;
/// - on a graceful shutdown, a connection still sending a request body is closed at once: that request was not
///   accepted yet, and would only be refused.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// A request read and not answered yet (pipelined requests queue up: answers go out in order).
    private struct Pending {
        var version: HTTPVersion
        var keepAlive: Bool
        /// Its end has arrived.
        var complete = false
    }

    private let readTimeout: TimeAmount?
    private let linger: TimeAmount
    private var pending: [Pending] = []
    /// The request being read has not ended.
    private var reading: Bool { pending.last.map { !$0.complete } ?? false }
    private var closeAfterResponse = false
    /// The last response is out: input is dropped until the linger ends.
    private var closing = false
    private var readDeadline: Scheduled<Void>?
    private var lingerEnd: Scheduled<Void>?

    init(limits: ConnectionLimits) {
        readTimeout = limits.readTimeout.map { TimeAmount(limit: $0) }
        linger = TimeAmount(limit: limits.lingerTimeout)
    }

    func handlerRemoved(context: ChannelHandlerContext) { cancelTimers() }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        context.fireChannelInactive()
    }

    private func cancelTimers() {
        readDeadline?.cancel()
        readDeadline = nil
        lingerEnd?.cancel()
        lingerEnd = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if closing { return }
        switch unwrapInboundIn(data) {
        case .head(var head):
            let keepAlive = head.isKeepAlive
            pending.append(Pending(version: head.version, keepAlive: keepAlive))
            if let readTimeout {
                readDeadline?.cancel()
                readDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: readTimeout) {
                    context.close(promise: nil)
                }
            }
            // Hummingbird ends a connection after a request whose `Connection` header is exactly "close".
            if !keepAlive { head.headers.replaceOrAdd(name: "connection", value: "close") }
            context.fireChannelRead(wrapInboundOut(.head(head)))
        case .body:
            context.fireChannelRead(data)
        case .end:
            if !pending.isEmpty { pending[pending.count - 1].complete = true }
            readDeadline?.cancel()
            readDeadline = nil
            context.fireChannelRead(data)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if closing {
            context.read()  // keep draining what the client sends, whatever the handler above still reads
            return
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head):
            // No request read (a 400 for a malformed head): HTTP/1.1, and the response says `Connection: close`.
            let request = pending.first ?? Pending(version: .http1_1, keepAlive: true, complete: true)
            let http10 = request.version.major == 1 && request.version.minor == 0
            if http10 { head.version = request.version }
            let saysClose = head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "close" }
            let framedByClose = http10 && !head.headers.contains(name: "content-length")
            closeAfterResponse = !request.keepAlive || saysClose || framedByClose || !request.complete
            if closeAfterResponse {
                head.headers.replaceOrAdd(name: "connection", value: "close")
            } else if http10 {
                head.headers.replaceOrAdd(name: "connection", value: "keep-alive")
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            if !pending.isEmpty { pending.removeFirst() }
            guard closeAfterResponse, !closing else {
                context.write(data, promise: promise)
                return
            }
            closing = true
            readDeadline?.cancel()
            readDeadline = nil
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.cascade(to: promise)
            context.writeAndFlush(data, promise: written)
            written.futureResult.assumeIsolated().whenComplete { [self] _ in
                context.close(mode: .output, promise: nil)
                lingerEnd = context.eventLoop.assumeIsolated().scheduleTask(in: linger) { context.close(promise: nil) }
                context.read()
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, reading {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension ConnectionGuard: Sendable {}
