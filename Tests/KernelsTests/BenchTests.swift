import VAttention
import Foundation
import Kernels
import Testing

/// Opt-in timing (KERNELS_BENCH=1, meant for `-c release`); prints median
/// milliseconds. Not a correctness test.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["KERNELS_BENCH"] != nil), .serialized)
struct Bench {
    /// Median wall ms and median calling-thread CPU ms (the latter is less
    /// disturbed by other processes on a shared machine; meaningful for threads 1).
    func median(_ runs: Int, _ body: () -> Void) -> String {
        body()
        var wall: [Double] = [], cpu: [Double] = []
        func cpuNow() -> Double { var ts = timespec(); clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts); return Double(ts.tv_sec) * 1e3 + Double(ts.tv_nsec) / 1e6 }
        for _ in 0..<runs {
            let t0 = DispatchTime.now().uptimeNanoseconds, c0 = cpuNow()
            body()
            cpu.append(cpuNow() - c0)
            wall.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        return "wall \(wall.sorted()[runs / 2]) ms, cpu \(cpu.sorted()[runs / 2]) ms"
    }

    @Test(arguments: [(9, 3, 64, 4096), (32, 8, 128, 4096)], [KVElementType.fp32, .fp16, .bf16])
    func decode(_ s: (Int, Int, Int, Int), type: KVElementType) {
        let (qh, kvh, d, len) = s
        var (rng, _) = makeRNG("bench")
        let shape = AttentionShape(qHeads: qh, kvHeads: kvh, headDim: d)
        let cache = ContiguousCache(layout: .perLayer, type: type, slots: 1, maxContext: len, kvHeads: kvh, headDim: d)
        let seq = SequenceData(length: len, kvHeads: kvh, headDim: d, type: type, rng: &rng)
        cache.append(keys: seq.keys, values: seq.values, slot: 0, from: 0, count: len)
        let q = randomFloats(qh * d, -2...2, &rng)
        var out = poisoned(q.count)
        for threads in [1, 2] {
            let ms = median(21) {
                decodeAttention(query: q, keys: cache.k, values: cache.v, slots: [0], lengths: [len], shape: shape,
                                scale: 1 / Float(d).squareRoot(), output: &out, options: AttentionOptions(threads: threads))
            }
            print("BENCH decode q\(qh)/kv\(kvh) d\(d) ctx\(len) \(type) threads \(threads): \(ms)")
        }
    }

    @Test(arguments: [(9, 3, 64, 0, 512), (32, 8, 128, 512, 256)])
    func prefill(_ s: (Int, Int, Int, Int, Int)) {
        let (qh, kvh, d, offset, chunk) = s
        var (rng, _) = makeRNG("bench")
        let shape = AttentionShape(qHeads: qh, kvHeads: kvh, headDim: d)
        let total = offset + chunk
        let cache = ContiguousCache(layout: .perLayer, type: .fp16, slots: 1, maxContext: total, kvHeads: kvh, headDim: d)
        let seq = SequenceData(length: total, kvHeads: kvh, headDim: d, type: .fp16, rng: &rng)
        cache.append(keys: seq.keys, values: seq.values, slot: 0, from: 0, count: total)
        let q = randomFloats(chunk * qh * d, -2...2, &rng)
        var out = poisoned(q.count)
        for threads in [1, 2] {
            let ms = median(5) {
                prefillAttention(query: q, chunkLength: chunk, offset: offset, keys: cache.k, values: cache.v, slot: 0,
                                 shape: shape, scale: 1 / Float(d).squareRoot(), output: &out, options: AttentionOptions(threads: threads))
            }
            print("BENCH prefill q\(qh)/kv\(kvh) d\(d) offset\(offset) chunk\(chunk) fp16 threads \(threads): \(ms)")
        }
    }
}
