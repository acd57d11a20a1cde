import CUDADriver

/// Times each phase of a CUDA step with events on its stream (plain launches only: a graph replay has no marks), and
/// sums them over steps: where a step's time goes.
final class CUDAStepProfiler {
    private let cuda: CUDA
    private var events: [CUDAEvent] = []
    private var marks: [(phase: String, event: CUDAEvent)] = []
    /// Milliseconds by phase, summed over `steps`.
    private(set) var milliseconds: [String: Double] = [:]
    private(set) var steps = 0

    init(_ cuda: CUDA) { self.cuda = cuda }

    /// Records the end of `phase` (the time since the previous mark is charged to it).
    func mark(_ phase: String, on stream: CUDAStream) throws {
        if marks.count == events.count { events.append(try CUDAEvent(cuda, timing: true)) }
        let e = events[marks.count]
        try e.record(on: stream)
        marks.append((phase, e))
    }

    /// After the step's stream has finished: adds its marks to the totals.
    func collect() throws {
        guard marks.count > 1 else { return }
        for i in 1..<marks.count {
            milliseconds[marks[i].phase, default: 0] += Double(try marks[i].event.milliseconds(since: marks[i - 1].event))
        }
        steps += 1
        marks.removeAll()
    }

    func reset() {
        milliseconds = [:]
        steps = 0
    }
}

/// Decode-only steps captured as CUDA graphs, one per (KV store, batch bucket, length bucket), replayed with new
/// metadata each step: ~300 launches become one.
final class CUDAGraphCache {
    struct Key: Hashable {
        var store: ObjectIdentifier
        var batch: Int
        var length: Int
    }
    private var graphs: [Key: CUDAGraphExec] = [:]
    private(set) var replays = 0, captures = 0

    /// Replays the graph for `key`, capturing `enqueue` on `stream` first if there is none yet.
    func launch(_ key: Key, on stream: CUDAStream, enqueue: () throws -> Void) throws {
        if graphs[key] == nil {
            graphs[key] = try stream.capture(enqueue)
            captures += 1
        }
        try graphs[key]!.launch(on: stream)
        replays += 1
    }

    /// Drops every graph (their captured addresses are stale, e.g. the metadata buffer moved).
    func removeAll() { graphs.removeAll() }
}
