import CCUDA

/// How strictly a stream capture forbids "unsafe" driver calls (synchronous copies, legacy-stream work, …) while it
/// is open (`CUstreamCaptureMode`).
public enum CUDACaptureMode: Int32, Sendable {
    /// Unsafe calls from any thread fail while the capture is open.
    case global = 0
    /// Unsafe calls fail only on the capturing thread: other threads (a background mapper, a server's uploads) keep
    /// working. The default here.
    case threadLocal = 1
    /// Nothing is checked.
    case relaxed = 2
}

/// A CUDA graph built by stream capture (`CUDAStream.captureGraph`). Destroyed (cuGraphDestroy) when released; an
/// instantiated `CUDAGraphExec` does not need it any more.
public final class CUDAGraph: @unchecked Sendable {
    public let cuda: CUDA
    public let handle: CUgraph?

    init(_ cuda: CUDA, handle: CUgraph?) {
        self.cuda = cuda
        self.handle = handle
    }

    deinit { _ = cuda.api.graphDestroy(handle) }

    /// Compiles the graph into something launchable (cuGraphInstantiateWithFlags; `flags` 0 unless you need e.g.
    /// CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH = 1).
    public func instantiate(flags: UInt64 = 0) throws(CUDAError) -> CUDAGraphExec {
        let (r, e) = cuda.api.graphInstantiate(handle, flags)
        try cuda.check(r, "cuGraphInstantiateWithFlags")
        return CUDAGraphExec(cuda, handle: e)
    }
}

/// An instantiated graph: the captured work, replayed with one `launch`. Destroyed (cuGraphExecDestroy) when
/// released.
///
/// A replay re-runs the captured launches with the **same arguments**: the same device addresses, the same grid. Work
/// that must change between replays reads its changing inputs (lengths, slot ids, block tables, positions) from
/// device memory that the caller rewrites before the launch. The modules whose kernels were captured, and every
/// buffer the kernels touch, must outlive the exec.
public final class CUDAGraphExec: @unchecked Sendable {
    public let cuda: CUDA
    public let handle: CUgraphExec?

    init(_ cuda: CUDA, handle: CUgraphExec?) {
        self.cuda = cuda
        self.handle = handle
    }

    deinit { _ = cuda.api.graphExecDestroy(handle) }

    /// Enqueues one replay of the whole graph on `stream` (asynchronous, like a kernel launch).
    public func launch(on stream: CUDAStream) throws(CUDAError) {
        try cuda.check(cuda.api.graphLaunch(handle, stream.handle), "cuGraphLaunch")
    }
}

extension CUDAStream {
    /// Starts capturing: work enqueued on this stream is recorded, not run, until `endCapture`. Prefer `capture`.
    public func beginCapture(mode: CUDACaptureMode = .threadLocal) throws(CUDAError) {
        try cuda.check(cuda.api.streamBeginCapture(handle, mode.rawValue), "cuStreamBeginCapture")
    }

    /// Ends the capture begun by `beginCapture` and returns the recorded graph.
    public func endCapture() throws(CUDAError) -> CUDAGraph {
        let (r, g) = cuda.api.streamEndCapture(handle)
        if r != 0 {
            // A failed capture may still hand back a (partial) graph: destroy it.
            if g != nil { _ = cuda.api.graphDestroy(g) }
            throw cuda.error(r, "cuStreamEndCapture")
        }
        return CUDAGraph(cuda, handle: g)
    }

    /// Records what `body` enqueues on this stream into a graph (nothing runs). If `body` throws, the capture is
    /// ended and its partial graph destroyed, so the stream is usable again, and the error is rethrown.
    public func captureGraph(mode: CUDACaptureMode = .threadLocal, _ body: () throws -> Void) throws -> CUDAGraph {
        try beginCapture(mode: mode)
        do {
            try body()
        } catch {
            let (_, g) = cuda.api.streamEndCapture(handle)
            if g != nil { _ = cuda.api.graphDestroy(g) }
            throw error
        }
        return try endCapture()
    }

    /// Captures what `body` enqueues on this stream and instantiates it: begin capture → `body`'s launches → end
    /// capture → instantiate → destroy the graph (the exec keeps what it needs). Replay with `exec.launch(on:)`.
    ///
    ///     let step = try stream.capture { for layer in layers { try decode(layer) } }
    ///     for _ in 0..<tokens { try updateLengths(); try step.launch(on: stream) }
    public func capture(mode: CUDACaptureMode = .threadLocal, flags: UInt64 = 0,
                        _ body: () throws -> Void) throws -> CUDAGraphExec {
        let graph = try captureGraph(mode: mode, body)
        return try withExtendedLifetime(graph) { () throws(CUDAError) -> CUDAGraphExec in
            try graph.instantiate(flags: flags)
        }
    }
}
