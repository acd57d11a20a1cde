import NIOEmbedded
@testable import Server
import Synchronization
import Testing

@Suite("Disconnect actions")
struct DisconnectTests {
    @Test("a keep-alive connection holds one action, not one per request; closing it runs only the latest, once")
    func actionsDoNotPileUp() throws {
        let channel = EmbeddedChannel()
        let ran = Mutex<[Int]>([])
        for i in 0..<1000 {
            DisconnectActions.shared.set({ ran.withLock { $0.append(i) } }, for: channel)
        }
        #expect(DisconnectActions.shared.isWatching(channel))
        #expect(ran.withLock { $0 }.isEmpty)
        _ = try channel.finish()  // closes the channel
        #expect(ran.withLock { $0 } == [999])
        #expect(!DisconnectActions.shared.isWatching(channel))
    }

    @Test("registering on a connection that already closed runs the action at once")
    func alreadyClosed() throws {
        let channel = EmbeddedChannel()
        _ = try channel.finish()
        let ran = Mutex(0)
        DisconnectActions.shared.set({ ran.withLock { $0 += 1 } }, for: channel)
        #expect(ran.withLock { $0 } == 1)
        #expect(!DisconnectActions.shared.isWatching(channel))
    }
}
