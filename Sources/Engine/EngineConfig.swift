import Model
import Support
import VAttention

/// What an engine is built from: the model, where it runs, its KV cache and its limits. `EngineBuilder` turns it
/// into an `LLMEngine`; `vattn`'s model options parse into one.
public struct EngineConfig: Sendable {
    /// Where the model runs.
    public enum Backend: String, Sendable, CaseIterable {
        /// The GPU if a CUDA driver and a GPU are found, else the CPU.
        case auto
        case cpu
        case cuda
    }

    /// The KV store.
    public enum KVMode: Sendable, Hashable {
        /// vAttention: contiguous virtual tensors, pages mapped on demand. `layout` nil: mega on a GPU (its pages
        /// are 2 MB, and per-layer tensors would round every request up by 2 MB per layer and K/V), perLayer on
        /// the CPU. `cpuPageSize`: the physical page size on the CPU, bytes (a multiple of 4 KiB; on a GPU pages
        /// are the device's granularity).
        case vattention(layout: KVCacheSpec.Layout?, cpuPageSize: Int)
        /// The paged baseline (block tables, as vLLM), blocks of `blockSize` tokens.
        case paged(blockSize: Int)
    }

    public var model: ModelSource
    public var backend: Backend
    public var kv: KVMode
    /// Requests that can run at once (KV slots).
    public var slots: Int
    /// Longest sequence (prompt + output) per request, tokens. nil: `defaultMaxContext`, or the model's context
    /// length if shorter. An explicit value past the model's context length is an error. Either way the context is
    /// lowered, with a note, to what the KV budget holds for one request.
    public var maxContext: Int?
    /// Tokens computed per engine step.
    public var tokenBudget: Int
    /// KV memory, bytes. nil: `defaultCPUKVBudget` on the CPU; on a GPU, `defaultGPUKVShare` of the memory left
    /// after weights and scratch.
    public var kvBudgetBytes: Int?
    /// How the CPU engine multiplies by quantized weights.
    public var cpuMatmul: CPUMatmul
    /// On a GPU, replay decode steps as CUDA graphs.
    public var cudaGraphs: Bool

    public static let defaultMaxContext = 2048
    /// The fewest tokens one request must be able to hold for the engine to be worth starting.
    public static let minimumRequestTokens = 16
    public static let defaultCPUKVBudget = 512 << 20
    public static let defaultGPUKVShare = 0.9
    /// The most F32 dummy weights the CPU engine generates (smollm2-135m is 0.5 GiB).
    public static let cpuDummyLimitBytes = 4 << 30

    public init(model: ModelSource = .store(ModelStore.defaultModel), backend: Backend = .auto,
                kv: KVMode = .vattention(layout: nil, cpuPageSize: 64 << 10), slots: Int = 16, maxContext: Int? = nil,
                tokenBudget: Int = 256, kvBudgetBytes: Int? = nil, cpuMatmul: CPUMatmul = .best,
                cudaGraphs: Bool = true) {
        self.model = model
        self.backend = backend
        self.kv = kv
        self.slots = slots
        self.maxContext = maxContext
        self.tokenBudget = tokenBudget
        self.kvBudgetBytes = kvBudgetBytes
        self.cpuMatmul = cpuMatmul
        self.cudaGraphs = cudaGraphs
    }
}

/// Why an `EngineConfig` cannot be built. The texts name `vattn`'s options, which is how users meet them.
public enum EngineConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An explicit max context past the model's context length.
    case maxContextPastModel(requested: Int, modelContext: Int)
    /// The KV budget (nil: the default) holds fewer than `EngineConfig.minimumRequestTokens` for one request.
    case kvBudgetTooSmall(budgetBytes: Int?, capacityTokens: Int, store: String)
    /// A host KV budget larger than the machine's memory.
    case kvBudgetPastMemory(budgetBytes: Int, memoryBytes: Int)
    /// Dummy weights the CPU engine would materialize as more than `EngineConfig.cpuDummyLimitBytes` of F32.
    case dummyWeightsTooLargeForCPU(shape: String, bytes: Int, limitBytes: Int)
    /// `.cuda` asked for, and no driver or GPU found.
    case noCUDADevice(reason: String)

    public var description: String {
        switch self {
        case .maxContextPastModel(let requested, let modelContext):
            "--max-context \(requested): the model's context length is \(modelContext) tokens; use at most that"
        case .kvBudgetTooSmall(let budget, let capacity, let store):
            "the KV budget (\(Self.describe(budget))) holds only \(capacity) tokens for one request (\(store)); at "
                + "least \(EngineConfig.minimumRequestTokens) are needed: raise --kv-mib"
        case .kvBudgetPastMemory(let budget, let memory):
            "--kv-mib \(budget >> 20): more than this machine's \(formatBytes(memory)) of memory"
        case .dummyWeightsTooLargeForCPU(let shape, let bytes, let limit):
            "--dummy-weights \(shape): \(formatBytes(bytes)) of F32 weights is too much for the CPU engine (limit "
                + "\(formatBytes(limit))); this shape is for the GPU engine"
        case .noCUDADevice(let reason):
            "--backend cuda: no usable CUDA driver or GPU on this machine (\(reason)); use --backend cpu or auto"
        }
    }

    /// A KV budget as the messages name it: the option that set it, or "the default".
    static func describe(_ budgetBytes: Int?) -> String {
        guard let budgetBytes else { return "the default" }
        return budgetBytes % (1 << 20) == 0 ? "--kv-mib \(budgetBytes >> 20)" : formatBytes(budgetBytes)
    }
}
