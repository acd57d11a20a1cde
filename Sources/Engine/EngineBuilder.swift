import CUDADriver
import Model
import Support
import VAttention

/// Builds the engine an `EngineConfig` describes: finds the device, loads the model, makes the model runner (GPU or
/// CPU) and the KV store fitted to both, then the `LLMEngine`. This is the one place where that is decided; the
/// steps are public for callers that need one of them alone (a bench that times the CPU model, a check that builds
/// stores for a model of its own).
///
///     let built = try EngineBuilder(config, log: printErr).build()
///     built.engine.add(prompt: …)
///
/// Notes (a model being fetched, a context lowered to what the KV budget holds) go to `log` as they happen and are
/// kept in `notes`.
public struct EngineBuilder {
    public let config: EngineConfig
    private let log: NoteLog

    public init(_ config: EngineConfig, log: @escaping (String) -> Void = { _ in }) {
        self.config = config
        self.log = NoteLog(log)
    }

    /// The notes so far, in order.
    public var notes: [String] { log.notes }

    /// Device, model, runner, KV store and engine (`preloaded`: a model already loaded from `config.model`). The
    /// device is looked for before the model loads, so a wrong backend fails fast.
    public func build(_ preloaded: LoadedModel? = nil) throws -> BuiltEngine {
        let device = try cudaDevice()
        let loaded = try preloaded ?? loadModel()
        let runner = try makeRunner(for: loaded, on: device)
        let engine = try makeEngine(runner: runner, tokenizer: loaded.tokenizer)
        return BuiltEngine(engine: engine, model: loaded, notes: notes)
    }

    /// The GPU to run on, or nil for the CPU (`.auto` falls back to the CPU only when no driver or GPU is found).
    public func cudaDevice() throws -> CUDADevice? {
        if config.backend == .cpu { return nil }
        do {
            let cuda = try CUDA.load()
            guard try cuda.deviceCount() > 0 else {
                throw CUDAError(code: CUDAError.noDevice, name: "CUDA_ERROR_NO_DEVICE", call: "cuDeviceGetCount",
                                message: "the driver sees no GPU")
            }
            return try CUDADevice(cuda)
        } catch {
            if config.backend == .cuda { throw EngineConfigError.noCUDADevice(reason: "\(error)") }
            return nil
        }
    }

    /// `config.model`, loaded (a known name not downloaded yet is pulled first).
    public func loadModel() throws -> LoadedModel {
        try config.model.load(log: log.note)
    }

    /// The model on `device` (bf16 weights, steps of up to max(token budget, slots) tokens and `slots` rows), or on
    /// the CPU when `device` is nil.
    public func makeRunner(for loaded: LoadedModel, on device: CUDADevice?) throws -> any ModelRunner {
        guard let device else { return try makeCPUModel(loaded) }
        let gpu = try CUDALlamaModel(weights: loaded.weights, device: device,
                                     maxTokens: max(config.tokenBudget, config.slots), maxRows: config.slots,
                                     compiler: try NVRTC())
        gpu.useGraphs = config.cudaGraphs
        return gpu
    }

    /// The CPU model with `config.cpuMatmul`. Dummy weights become F32 on the CPU: shapes past
    /// `EngineConfig.cpuDummyLimitBytes` (8B shapes, for the GPU engine) are refused.
    public func makeCPUModel(_ loaded: LoadedModel) throws -> CPULlamaModel {
        if let dummy = loaded.weights as? DummyWeights {
            let bytes = dummy.hyperparameters.parameterCount * 4
            guard bytes <= EngineConfig.cpuDummyLimitBytes else {
                throw EngineConfigError.dummyWeightsTooLargeForCPU(shape: loaded.name, bytes: bytes,
                                                                   limitBytes: EngineConfig.cpuDummyLimitBytes)
            }
        }
        return try CPULlamaModel(weights: loaded.weights, matmul: config.cpuMatmul)
    }

    /// The KV store for `runner` and the engine over both, with `config`'s token budget and slots.
    public func makeEngine(runner: any ModelRunner, tokenizer: Tokenizer?) throws -> LLMEngine {
        LLMEngine(model: runner, tokenizer: tokenizer, kv: try makeKVStore(for: runner),
                  configuration: EngineConfiguration(tokenBudget: config.tokenBudget, maxRunning: config.slots))
    }

    /// The KV store for the model: vAttention (host memory for the CPU model, cuMem* pages for the GPU one) or the
    /// paged baseline (host or device pools). The GPU keeps K/V in bf16, the CPU in fp32.
    ///
    /// The context is fitted first to the model (an explicit `config.maxContext` past the model's context length is
    /// refused; the default is lowered to it), then to the pool: when the KV budget cannot hold one request of that
    /// length the context is lowered to what it can hold, with a note — a request never waits for memory it can
    /// never have — and a budget that holds fewer than `EngineConfig.minimumRequestTokens` is refused.
    public func makeKVStore(for model: any ModelRunner) throws -> any KVStore {
        let hp = model.hyperparameters
        var context = config.maxContext ?? EngineConfig.defaultMaxContext
        if context > hp.contextLength {
            if config.maxContext != nil {
                throw EngineConfigError.maxContextPastModel(requested: context, modelContext: hp.contextLength)
            }
            context = hp.contextLength
        }
        var store: (any KVStore)? = try makeKVStore(for: model, maxContext: context)
        let capacity = store!.capacityTokens
        if capacity < EngineConfig.minimumRequestTokens {
            throw EngineConfigError.kvBudgetTooSmall(budgetBytes: config.kvBudgetBytes, capacityTokens: capacity,
                                                     store: store!.name)
        }
        if capacity < context {
            log.note("vattn: the KV budget (\(EngineConfigError.describe(config.kvBudgetBytes))) holds at most "
                     + "\(capacity) tokens for one request: max context lowered from \(context) to \(capacity) "
                     + "(raise --kv-mib for more)")
            store = nil  // its memory goes back before the smaller store takes its own
            store = try makeKVStore(for: model, maxContext: capacity)
        }
        return store!
    }

    private func makeKVStore(for model: any ModelRunner, maxContext: Int) throws -> any KVStore {
        let hp = model.hyperparameters
        let gpu = model as? CUDALlamaModel
        var budget = config.kvBudgetBytes ?? EngineConfig.defaultCPUKVBudget
        if let gpu, config.kvBudgetBytes == nil {
            budget = Int(Double(try gpu.device.memoryInfo().free) * EngineConfig.defaultGPUKVShare)
        }
        if gpu == nil, let ram = HostMemoryBackend().physicalMemoryLimit, budget > ram {
            throw EngineConfigError.kvBudgetPastMemory(budgetBytes: budget, memoryBytes: ram)
        }
        switch (config.kv, gpu) {
        case (.vattention(let layout, let pageSize), nil):
            let spec = KVCacheSpec(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, dtype: .fp32,
                                   maxSlots: config.slots, maxContext: maxContext, pageSize: pageSize,
                                   layout: layout ?? .perLayer)
            return VAttentionKVStore(manager: try KVCacheManager(spec: spec, backend: HostMemoryBackend(),
                                                                memoryBudget: budget))
        case (.vattention(let layout, _), let gpu?):
            return try gpu.makeKVStore(pagedBlockSize: nil, layout: layout ?? .mega, slots: config.slots,
                                       maxContext: maxContext, budget: budget)
        case (.paged(let blockSize), nil):
            return PagedKVStore(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim,
                                elementType: .fp32, slots: config.slots, maxContext: maxContext,
                                blockSize: blockSize, memoryBudget: budget)
        case (.paged(let blockSize), let gpu?):
            return try gpu.makeKVStore(pagedBlockSize: blockSize, layout: .perLayer, slots: config.slots,
                                       maxContext: maxContext, budget: budget)
        }
    }
}

/// What `EngineBuilder.build` made.
public struct BuiltEngine {
    public let engine: LLMEngine
    /// The model it runs: its tokenizer (nil for dummy weights), chat template and name.
    public let model: LoadedModel
    /// The notes printed while building, in order.
    public let notes: [String]
}

extension CUDALlamaModel {
    /// A KV store on this model's GPU, K/V in bf16: vAttention (cuMem* pages of the device's granularity, mapped on
    /// demand, in `layout`) when `pagedBlockSize` is nil, else the paged baseline (device pools, blocks of that many
    /// tokens).
    public func makeKVStore(pagedBlockSize: Int?, layout: KVCacheSpec.Layout, slots: Int, maxContext: Int, budget: Int,
                            policy: MapAheadPolicy = MapAheadPolicy()) throws -> any KVStore {
        let hp = hyperparameters
        if let pagedBlockSize {
            return try PagedKVStore(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim,
                                    elementType: .bf16, slots: slots, maxContext: maxContext,
                                    blockSize: pagedBlockSize, memoryBudget: budget, device: device.cuda)
        }
        let backend = try CUDAMemoryBackend(device: device, stream: stream)
        let spec = KVCacheSpec(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, dtype: .bf16,
                               maxSlots: slots, maxContext: maxContext, pageSize: backend.granularity, layout: layout)
        return VAttentionKVStore(manager: try KVCacheManager(spec: spec, backend: backend, memoryBudget: budget,
                                                            policy: policy))
    }
}

/// Forwards notes to the caller's log and keeps them.
private final class NoteLog {
    private let forward: (String) -> Void
    private(set) var notes: [String] = []

    init(_ forward: @escaping (String) -> Void) { self.forward = forward }

    func note(_ text: String) {
        notes.append(text)
        forward(text)
    }
}
