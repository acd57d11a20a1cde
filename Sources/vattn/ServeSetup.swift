import ArgumentParser
import CUDADriver
import Engine
import Kernels
import Model
import VAttention

/// Options shared by every command that runs the model.
struct ModelOptions: ParsableArguments {
    @Option(help: "Model: a short name from `vattn models list` (fetched on first use) or a path to a .gguf file.")
    var model = ModelStore.defaultModel
    @Option(help: "KV cache: vattention (contiguous virtual tensors, pages mapped on demand) or paged (block tables, the vLLM baseline).")
    var kv: KVChoice = .vattention
    @Option(help: "vAttention layout: perLayer (one K and one V tensor per layer) or mega (all layers in one).")
    var layout: KVCacheSpec.Layout = .perLayer
    @Option(help: "Physical page size for vAttention on the CPU, KiB (any multiple of 4).")
    var pageKiB = 64
    @Option(help: "Block size (tokens) of the paged baseline.")
    var blockSize = 16
    @Option(help: "Where the model runs: auto (the GPU if a CUDA driver is found, else the CPU), cpu, or cuda.")
    var backend: ModelBackend = .auto
    @Option(name: .customLong("kv-mib"), help: "KV memory budget, MiB (default: 512 on the CPU; on a GPU, 90% of the memory left after weights and scratch).")
    var kvMiB: Int?
    @Option(help: "Requests that can run at once (KV slots).")
    var slots = 16
    @Option(help: "Longest sequence (prompt + output) per request, tokens.")
    var maxContext = 2048
    @Option(help: "Tokens computed per engine step (decodes first, then prompt chunks).")
    var tokenBudget = 256

    enum KVChoice: String, ExpressibleByArgument, CaseIterable { case vattention, paged }
    enum ModelBackend: String, ExpressibleByArgument, CaseIterable { case auto, cpu, cuda }

    /// Loads the model (pulling it if it is a known name not yet in the cache) and builds the engine.
    func makeEngine() throws -> (LLMEngine, GGUFFile) {
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
        let tokenizer = try Tokenizer(file: file)
        let device = try cudaDevice()
        let model: any ModelRunner = try device.map {
            try CUDALlamaModel(weights: .gguf(file), device: $0, maxTokens: tokenBudget, maxRows: slots,
                               compiler: try NVRTC())
        } ?? CPULlamaModel(file: file)
        let store = try makeKVStore(model)
        let engine = LLMEngine(model: model, tokenizer: tokenizer, kv: store,
                               configuration: EngineConfiguration(tokenBudget: tokenBudget, maxRunning: slots))
        return (engine, file)
    }
}

extension ModelOptions {
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
            if backend == .cuda { throw error }
            return nil
        }
    }

    /// The KV store for the model: vAttention (host memory for the CPU model, cuMem* pages for the GPU one) or
    /// the paged baseline (host or device pools). The GPU keeps K/V in bf16, the CPU in fp32.
    func makeKVStore(_ model: any ModelRunner) throws -> any KVStore {
        let hp = model.hyperparameters
        let gpu = model as? CUDALlamaModel
        var budget = (kvMiB ?? 512) << 20
        if let gpu, kvMiB == nil {
            budget = Int(Double(try gpu.device.memoryInfo().free) * 0.9)
        }
        switch (kv, gpu) {
        case (.vattention, nil):
            let spec = KVCacheSpec(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, dtype: .fp32,
                                   maxSlots: slots, maxContext: maxContext, pageSize: pageKiB * 1024, layout: layout)
            return VAttentionKVStore(manager: try KVCacheManager(spec: spec, backend: HostMemoryBackend(),
                                                                memoryBudget: budget))
        case (.vattention, let gpu?):
            let backend = try CUDAMemoryBackend(device: gpu.device, stream: gpu.stream)
            let spec = KVCacheSpec(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, dtype: .bf16,
                                   maxSlots: slots, maxContext: maxContext, pageSize: backend.granularity,
                                   layout: layout)
            return VAttentionKVStore(manager: try KVCacheManager(spec: spec, backend: backend, memoryBudget: budget))
        case (.paged, nil):
            return PagedKVStore(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim,
                                elementType: .fp32, slots: slots, maxContext: maxContext, blockSize: blockSize,
                                memoryBudget: budget)
        case (.paged, let gpu?):
            return try PagedKVStore(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim,
                                    elementType: .bf16, slots: slots, maxContext: maxContext, blockSize: blockSize,
                                    memoryBudget: budget, device: gpu.device.cuda)
        }
    }
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
