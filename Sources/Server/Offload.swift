import Dispatch

/// Runs CPU-bound `work` (tokenizing a prompt) on a global Dispatch queue and awaits its result, so that it holds
/// no thread of Swift's cooperative pool, which runs every request handler: there a long tokenization stalls them
/// all (issue 14: two 1 MB prompts made the server unresponsive). The global queue's threads are bounded by the CPUs.
func offloaded<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global(qos: .userInitiated).async { continuation.resume(returning: work()) }
    }
}
