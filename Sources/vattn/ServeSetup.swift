import ArgumentParser
import CUDADriver
import Engine
import Kernels
import Model
import VAttention

/// Options shared by every command that runs the model.
struct ModelOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Model: a short name from `vattn models list` (fetched on first use), a .gguf file, or an HF model directory "
            + "(config.json, model.safetensors or shards, tokenizer.json). With --dummy-weights: a config.json, an HF "
            + "directory or a shape name (\(DummyWeights.knownShapes.map(\.name).joined(separator: ", "))).",
        valueName: "name-or-path"))
    var model = ModelStore.defaultModel
    @Flag(help: "Seeded random weights of the --model shape instead of real ones (throughput runs; no tokenizer, so no text: use `vattn bench serve`).")
    var dummyWeights = false
    @Option(help: "Seed of --dummy-weights.")
    var dummySeed: UInt64 = 0
    @Option(help: "KV cache: vattention (contiguous virtual tensors, pages mapped on demand) or paged (block tables, the vLLM baseline).")
    var kv: KVChoice = .vattention
    @Option(help: "vAttention layout: perLayer (one K and one V tensor per layer) or mega (all layers in one). Default: mega on a GPU, where pages are 2 MB and per-layer tensors would round every request up by 2 MB per layer and K/V; perLayer on the CPU.")
    var layout: KVCacheSpec.Layout?
    @Option(name: .customLong("page-kib"), help: "Physical page size for vAttention on the CPU, KiB (any multiple of 4).")
    var pageKiB = 64
    @Option(help: "Block size (tokens) of the paged baseline.")
    var blockSize = 16
    @Option(help: "Where the model runs: auto (the GPU if a CUDA driver and a GPU are found, else the CPU), cpu, or cuda.")
    var backend: ModelBackend = .auto
    @Option(name: .customLong("cpu-matmul"),
            help: "How the CPU engine multiplies by Q4_0/Q4_1/Q8_0 weights: auto (integer kernels for the best instruction set this CPU has: \(CPUInstructionSet.best.optionName) here), integer kernels for one instruction set (\(CPUInstructionSet.allCases.map(\.optionName).joined(separator: ", "))), or float32 (every weight row dequantized for a float dot product, the reference).")
    var cpuMatmul: CPUMatmulChoice = .auto
    @Option(name: .customLong("cpu-activations"),
            help: "Bits per activation in the CPU engine's integer matmul: 16 (8-bit blocks plus an 8-bit residual; logits within 0.05 of float32 on SmolLM2) or 8 (llama.cpp's precision, faster prefill; logits move by up to ~1).")
    var cpuActivationBits = 16
    @Flag(inversion: .prefixedEnableDisable, help: "On a GPU, replay decode steps as CUDA graphs (one launch instead of hundreds).")
    var cudaGraphs = true
    @Option(name: .customLong("kv-mib"), help: "KV memory budget, MiB (default: 512 on the CPU; on a GPU, 90% of the memory left after weights and scratch).")
    var kvMiB: Int?
    @Option(help: "Requests that can run at once (KV slots).")
    var slots = 16
    @Option(name: .customLong("max-context"),
            help: "Longest sequence (prompt + output) per request, tokens (default: 2048, or the model's context length if shorter; at most the model's context length, and at most what the KV budget holds for one request).")
    var maxContextOption: Int?
    @Option(help: "Tokens computed per engine step (decodes first, then prompt chunks). Default: 256; 64 for the demo, whose first answers then start sooner.")
    var tokenBudget: Int?

    /// `--cpu-matmul` and `--cpu-activations` together (the model uses float32 where no weight suits the kernels).
    var requestedCPUMatmul: CPUMatmul { cpuMatmul.matmul(activations: cpuActivationBits == 8 ? .int8 : .int16) }

    /// `--max-context` as asked for (before it is fitted to the model and the KV pool: see `makeKVStore`).
    var maxContext: Int { maxContextOption ?? 2048 }

    /// The fewest tokens one request must be able to hold for the engine to be worth starting.
    static let minimumRequestTokens = 16

    func validate() throws {
        if let kvMiB, kvMiB < 1 || kvMiB > 1 << 30 {
            throw ValidationError("--kv-mib must be between 1 and \(1 << 30) (MiB), got \(kvMiB)")
        }
        guard (1...1 << 16).contains(slots) else { throw ValidationError("--slots must be between 1 and 65536, got \(slots)") }
        if let c = maxContextOption, !(1...1 << 24).contains(c) {
            throw ValidationError("--max-context must be between 1 and \(1 << 24) tokens, got \(c)")
        }
        if let t = tokenBudget, !(1...1 << 20).contains(t) {
            throw ValidationError("--token-budget must be between 1 and \(1 << 20) tokens per step, got \(t)")
        }
        guard (1...1 << 20).contains(pageKiB), pageKiB % 4 == 0 else {
            throw ValidationError("--page-kib must be a positive multiple of 4 (at most \(1 << 20)), got \(pageKiB)")
        }
        guard cpuActivationBits == 8 || cpuActivationBits == 16 else {
            throw ValidationError("--cpu-activations must be 8 or 16, got \(cpuActivationBits)")
        }
        if let isa = cpuMatmul.instructionSet, !isa.isSupported {
            throw ValidationError("--cpu-matmul \(cpuMatmul.rawValue): this CPU cannot run \(isa) kernels "
                                  + "(best here: \(CPUInstructionSet.best.optionName))")
        }
        guard (1...1 << 16).contains(blockSize) else {
            throw ValidationError("--block-size must be between 1 and 65536 tokens, got \(blockSize)")
        }
    }

    enum KVChoice: String, ExpressibleByArgument, CaseIterable { case vattention, paged }
    enum CPUMatmulChoice: String, ExpressibleByArgument, CaseIterable {
        case auto, portable, avx2, avx512VNNI = "avx512-vnni", float32

        var instructionSet: CPUInstructionSet? {
            switch self {
            case .portable: .portable
            case .avx2: .avx2
            case .avx512VNNI: .avx512VNNI
            case .auto, .float32: nil
            }
        }

        func matmul(activations: ActivationPrecision) -> CPUMatmul {
            switch self {
            case .auto: .integer(.best, activations)
            case .float32: .float32
            case .portable, .avx2, .avx512VNNI: .integer(instructionSet!, activations)
            }
        }
    }
    enum ModelBackend: String, ExpressibleByArgument, CaseIterable { case auto, cpu, cuda }

    /// Resolves `--model` (pulling a known name not yet in the cache) to a weight source and, for real models, a
    /// tokenizer and chat template.
    func loadModel() throws -> LoadedModel {
        if dummyWeights {
            let hp: LlamaHyperparameters
            if let known = DummyWeights.knownShape(model) {
                hp = known
            } else {
                let path = model.hasSuffix(".json") ? model : model + "/config.json"
                hp = try LlamaHyperparameters(huggingFaceConfig: MappedFile(path: path).json(), path: path)
            }
            return LoadedModel(weights: DummyWeights(hyperparameters: hp, seed: dummySeed), tokenizer: nil,
                               chatTemplateText: nil, name: model)
        }
        if model.hasSuffix("config.json") || (!model.hasSuffix(".gguf") && isDirectory(model)) {
            let hf = try SafetensorsModel(directory: model)
            // A checkpoint without a usable tokenizer still runs on token ids (bench serve).
            let tokenizer: Tokenizer?
            do { tokenizer = try hf.loadTokenizer() } catch {
                printErr("\(model): no tokenizer (\(error)); text commands will refuse this model")
                tokenizer = nil
            }
            return LoadedModel(weights: hf, tokenizer: tokenizer, chatTemplateText: hf.chatTemplateText(), name: model)
        }
        let path: String
        if model.hasSuffix(".gguf") {
            path = model
        } else {
            let store = ModelStore()
            if let p = try store.locate(model) {
                path = p
            } else {
                printErr("\(model) is not in \(ModelStore.defaultDirectory()) yet: fetching it")
                path = try store.pull(model) { printErr("  " + $0) }
            }
        }
        let file = try GGUFFile(path: path)
        return LoadedModel(weights: try GGUFWeights(file: file), tokenizer: try Tokenizer(file: file),
                           chatTemplateText: file["tokenizer.chat_template"]?.stringValue, name: model)
    }

    /// Loads the model (unless given) and builds the engine on the GPU (when `--backend` allows and one is found)
    /// or the CPU.
    func makeEngine(_ preloaded: LoadedModel? = nil, defaultTokenBudget: Int = 256) throws -> (LLMEngine, LoadedModel) {
        let device = try cudaDevice()  // before loading: a wrong --backend should fail fast
        let loaded = try preloaded ?? loadModel()
        let tokenBudget = self.tokenBudget ?? defaultTokenBudget
        let model: any ModelRunner
        if let device {
            let gpu = try CUDALlamaModel(weights: loaded.weights, device: device, maxTokens: max(tokenBudget, slots),
                                         maxRows: slots, compiler: try NVRTC())
            gpu.useGraphs = cudaGraphs
            model = gpu
        } else {
            if let dummy = loaded.weights as? DummyWeights {
                // The CPU engine materializes dummy weights as F32; 8B shapes are for the GPU engine.
                let bytes = Models.dummyParameterCount(dummy.hyperparameters) * 4
                guard bytes <= cpuDummyLimitBytes else {
                    throw ValidationErrorText("--dummy-weights \(self.model): \(formatBytes(bytes)) of F32 weights is too "
                        + "much for the CPU engine (limit \(formatBytes(cpuDummyLimitBytes))); this shape is for the GPU engine")
                }
            }
            model = try CPULlamaModel(weights: loaded.weights, matmul: requestedCPUMatmul)
        }
        let engine = LLMEngine(model: model, tokenizer: loaded.tokenizer, kv: try makeKVStore(model),
                               configuration: EngineConfiguration(tokenBudget: tokenBudget, maxRunning: slots))
        return (engine, loaded)
    }

    /// The GPU to run on, or nil for the CPU (`auto` falls back to the CPU only when no driver or GPU is found).
    func cudaDevice() throws -> CUDADevice? {
        if backend == .cpu { return nil }
        do {
            let cuda = try CUDA.load()
            guard try cuda.deviceCount() > 0 else {
                throw CUDAError(code: CUDAError.noDevice, name: "CUDA_ERROR_NO_DEVICE", call: "cuDeviceGetCount",
                                message: "the driver sees no GPU")
            }
            return try CUDADevice(cuda)
        } catch {
            if backend == .cuda {
                throw ValidationErrorText("--backend cuda: no usable CUDA driver or GPU on this machine (\(error)); "
                                          + "use --backend cpu or auto")
            }
            return nil
        }
    }

    /// The KV store for the model: vAttention (host memory for the CPU model, cuMem* pages for the GPU one) or
    /// the paged baseline (host or device pools). The GPU keeps K/V in bf16, the CPU in fp32.
    ///
    /// The context is fitted first to the model (an explicit `--max-context` past the model's context length is
    /// refused; the default is lowered to it), then to the pool: when the KV budget cannot hold one request of that
    /// length the context is lowered to what it can hold, with a note on stderr — a request never waits for memory it
    /// can never have — and a budget that holds fewer than `minimumRequestTokens` is refused.
    func makeKVStore(_ model: any ModelRunner) throws -> any KVStore {
        let hp = model.hyperparameters
        var context = maxContext
        if context > hp.contextLength {
            if maxContextOption != nil {
                throw ValidationErrorText("--max-context \(context): the model's context length is \(hp.contextLength) "
                                          + "tokens; use at most that")
            }
            context = hp.contextLength
        }
        var store: (any KVStore)? = try makeKVStore(model, maxContext: context)
        let capacity = store!.capacityTokens
        if capacity < Self.minimumRequestTokens {
            throw ValidationErrorText("the KV budget (\(kvDescription)) holds only \(capacity) tokens for one request "
                + "(\(store!.name)); at least \(Self.minimumRequestTokens) are needed: raise --kv-mib")
        }
        if capacity < context {
            printErr("vattn: the KV budget (\(kvDescription)) holds at most \(capacity) tokens for one request: "
                     + "max context lowered from \(context) to \(capacity) (raise --kv-mib for more)")
            store = nil  // its memory goes back before the smaller store takes its own
            store = try makeKVStore(model, maxContext: capacity)
        }
        return store!
    }

    private var kvDescription: String { kvMiB.map { "--kv-mib \($0)" } ?? "the default" }

    private func makeKVStore(_ model: any ModelRunner, maxContext: Int) throws -> any KVStore {
        let hp = model.hyperparameters
        let gpu = model as? CUDALlamaModel
        var budget = (kvMiB ?? 512) << 20
        if let gpu, kvMiB == nil {
            budget = Int(Double(try gpu.device.memoryInfo().free) * 0.9)
        }
        if gpu == nil, let ram = HostMemoryBackend().physicalMemoryLimit, budget > ram {
            throw ValidationErrorText("--kv-mib \(kvMiB ?? 512): more than this machine's \(formatBytes(ram)) of memory")
        }
        switch (kv, gpu) {
        case (.vattention, nil):
            let spec = KVCacheSpec(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, dtype: .fp32,
                                   maxSlots: slots, maxContext: maxContext, pageSize: pageKiB * 1024,
                                   layout: layout ?? .perLayer)
            return VAttentionKVStore(manager: try KVCacheManager(spec: spec, backend: HostMemoryBackend(),
                                                                memoryBudget: budget))
        case (.vattention, let gpu?):
            return try gpu.makeKVStore(pagedBlockSize: nil, layout: layout ?? .mega, slots: slots,
                                       maxContext: maxContext, budget: budget)
        case (.paged, nil):
            return PagedKVStore(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim,
                                elementType: .fp32, slots: slots, maxContext: maxContext, blockSize: blockSize,
                                memoryBudget: budget)
        case (.paged, let gpu?):
            return try gpu.makeKVStore(pagedBlockSize: blockSize, layout: .perLayer, slots: slots,
                                       maxContext: maxContext, budget: budget)
        }
    }
}

extension CUDALlamaModel {
    /// A KV store on this model's GPU, K/V in bf16: vAttention (cuMem* pages of the device's granularity, mapped on
    /// demand, in `layout`) when `pagedBlockSize` is nil, else the paged baseline (device pools, blocks of that many
    /// tokens).
    func makeKVStore(pagedBlockSize: Int?, layout: KVCacheSpec.Layout, slots: Int, maxContext: Int, budget: Int,
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

/// The most F32 dummy weights the CPU engine generates (smollm2-135m is 0.5 GiB).
let cpuDummyLimitBytes = 4 << 30

/// What `--model` resolved to.
struct LoadedModel {
    let weights: any LlamaWeights
    /// nil for dummy weights (and HF directories without a usable tokenizer.json).
    let tokenizer: Tokenizer?
    let chatTemplateText: String?
    let name: String

    /// The tokenizer, or an error saying why `command` cannot run on this model.
    func requireTokenizer(for command: String) throws -> Tokenizer {
        guard let tokenizer else {
            throw ValidationErrorText("vattn \(command) needs text, but \(name) has no tokenizer"
                + (weights is DummyWeights ? " (--dummy-weights): use `vattn bench serve`, which runs on token ids" : ""))
        }
        return tokenizer
    }

    func chatTemplate() throws -> ChatTemplate {
        guard let chatTemplateText else { throw ChatTemplateError.missing }
        return try ChatTemplate(template: chatTemplateText)
    }
}

private func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

/// Progress and summaries go to standard error, generated text to standard output (unbuffered writes).
func printErr(_ s: String) { write(fd: 2, s + "\n") }
func writeOut(_ s: String) { write(fd: 1, s) }

private func write(fd: Int32, _ s: String) {
    var text = s
    text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n <= 0 { return }
            offset += n
        }
    }
}

extension KVCacheSpec.Layout: ExpressibleByArgument {}

#if canImport(Glibc)
import Glibc
#endif

extension CPUInstructionSet {
    /// The spelling of `--cpu-matmul`.
    var optionName: String { ModelOptions.CPUMatmulChoice.allCases.first { $0.instructionSet == self }!.rawValue }
}
