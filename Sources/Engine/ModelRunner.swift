import Kernels
import Model
import VAttention

/// What the engine needs of a model: run one iteration's chunks and pick the next token of every chunk that wants
/// one. The CPU model samples on the host; the CUDA model samples on the GPU and copies back only the token ids.
public protocol ModelRunner: AnyObject {
    var hyperparameters: LlamaHyperparameters { get }
    /// Where the model runs ("cpu", "cuda: NVIDIA H100 …"), for summaries.
    var deviceDescription: String { get }
    /// The memory its kernels read K/V from: a store elsewhere cannot serve it.
    var kvLocation: MemoryLocation { get }
    /// Runs `chunks` (K/V written into `kv`, which must already back every slot to `start + tokens.count`) and
    /// returns one token per chunk with `wantsLogits`, in order, drawn with the matching entry of `sampling`.
    func run(_ chunks: [SequenceChunk], kv: any KVStore, sampling: [TokenDraw]) throws -> [TokenID]
    /// Makes the calling thread able to drive the model and its KV store (a GPU model binds its CUDA context, once
    /// per thread). The engine calls it before its own work on whatever thread steps it; the CPU model needs nothing.
    func bindCallingThread() throws
}

extension ModelRunner {
    public func bindCallingThread() throws {}
}

/// How to pick one token: the request's parameters and its uniform draw for this token (the random stream belongs to
/// the request, so batching and preemption never change what it samples).
public struct TokenDraw: Sendable {
    public var parameters: SamplingParameters
    /// 24 random bits: the draw is `uniform / 2^24`.
    public var uniform: UInt32

    public init(parameters: SamplingParameters, uniform: UInt32) {
        self.parameters = parameters
        self.uniform = uniform
    }
}

extension TokenDraw {
    /// This draw as one row of the GPU sampler's parameter array (`sample_tokens` in llama.cu): temperature bits,
    /// top-k, top-p bits, the 24-bit draw.
    public var kernelArguments: [Int32] {
        [Int32(bitPattern: parameters.temperature.bitPattern), Int32(parameters.topK),
         Int32(bitPattern: parameters.topP.bitPattern), Int32(bitPattern: uniform)]
    }
}

extension CPULlamaModel: ModelRunner {
    public var deviceDescription: String { "cpu, \(defaultThreadCount) threads, \(matmulInUse)" }
    public var kvLocation: MemoryLocation { .host }

    public func run(_ chunks: [SequenceChunk], kv: any KVStore, sampling: [TokenDraw]) throws -> [TokenID] {
        let logits = forward(chunks, kv: kv)
        precondition(logits.count == sampling.count, "one draw per chunk that wants logits")
        // Sampling a 49K vocabulary with top-k/top-p is ~0.1 ms a request: in parallel, as the forward is.
        var tokens = [TokenID](repeating: 0, count: logits.count)
        tokens.withUnsafeMutableBufferPointer { out in
            let out = SendablePointer(out.baseAddress!)
            parallelFor(logits.count) { i in
                out.pointer[i] = logits[i].withUnsafeBufferPointer { sampleToken($0, sampling[i]) }
            }
        }
        return tokens
    }
}
