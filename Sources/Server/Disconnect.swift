import Hummingbird
import HummingbirdCore
import NIOCore
import Support
import VAttention

/// The request context of the server: Hummingbird's basic one plus the connection's channel, so a handler that
/// waits for a whole (non-streaming) generation learns when its client goes away.
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// Calls `action` once when the connection closes (at once if it already has), unless a later request on the
    /// same connection replaces it first. Only real sockets close: the router test framework's in-memory channel
    /// never does.
    func onDisconnect(_ action: @escaping @Sendable () -> Void) {
        DisconnectActions.shared.set(action, for: channel)
    }
}

/// The cancel action of the request each connection is serving now. A connection gets one close callback, with its
/// first request; a later request on the same keep-alive connection replaces the action (HTTP/1.1 serves requests one
/// after another, so the earlier one has finished), so nothing piles up per request on a long-lived connection.
final class DisconnectActions: Sendable {
    static let shared = DisconnectActions()
    private let actions = Locked<[ObjectIdentifier: @Sendable () -> Void]>([:])

    /// Whether `channel` has an action registered (for tests).
    func isWatching(_ channel: any Channel) -> Bool { actions.withLock { $0[ObjectIdentifier(channel)] != nil } }

    func set(_ action: @escaping @Sendable () -> Void, for channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let first = actions.withLock { a in
            defer { a[id] = action }
            return a[id] == nil
        }
        guard first else { return }
        channel.closeFuture.whenComplete { _ in
            let action = self.actions.withLock { $0.removeValue(forKey: id) }
            action?()
        }
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
