import Hummingbird
import HummingbirdCore
import NIOCore

/// The request context of the server: Hummingbird's basic one plus the connection's channel, so a handler that
/// waits for a whole (non-streaming) generation learns when its client goes away.
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// Calls `action` once when the connection closes (at once if it already has). Only real sockets close: the
    /// router test framework's in-memory channel never does.
    func onDisconnect(_ action: @escaping @Sendable () -> Void) {
        channel.closeFuture.whenComplete { _ in action() }
    }
}

/// With remote half-closure on (Hummingbird's default), a client that closes its socket while the server is still
/// computing a response would go unnoticed until the response is written. This handler closes the channel as soon
/// as the input side ends, so the request is cancelled (and its KV slot freed) at once.
final class CloseOnInputClosed: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, case .inputClosed = e {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
