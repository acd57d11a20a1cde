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
    @Option(name: .customLong("page-kib"), help: "Physical page size for vAttention on the CPU, KiB (any multiple of 4).")
    var pageKiB = 64
    @Option(help: "Block size (tokens) of the paged baseline.")
    var blockSize = 16
    @Option(name: .customLong("kv-mib"), help: "KV memory budget, MiB: the most physical memory the KV cache may use.")
    var kvMiB = 512
    @Option(help: "Requests that can run at once (KV slots).")
    var slots = 16
    @Option(help: "Longest sequence (prompt + output) per request, tokens.")
    var maxContext = 2048
    @Option(help: "Tokens computed per engine step (decodes first, then prompt chunks). Default: 256; 64 for the demo, whose first answers then start sooner.")
    var tokenBudget: Int?
    @Option(help: "Where the model runs: auto (the best this machine has), cpu, or cuda (an NVIDIA GPU: the GPU model is not built yet, so this stops with an error for now).")
    var backend: EngineBackend = .auto

    enum KVChoice: String, ExpressibleByArgument, CaseIterable { case vattention, paged }

    /// Where the model runs. The one place that decides it, so a new backend is added here only.
    enum EngineBackend: String, ExpressibleByArgument, CaseIterable { case auto, cpu, cuda }

    /// The backend `--backend` resolves to on this machine. `auto` is the CPU until a GPU model exists.
    func resolvedBackend() throws -> EngineBackend {
        switch backend {
        case .auto, .cpu: return .cpu
        case .cuda:
            // Say first what the user can fix (no driver), then what they cannot yet (no GPU model).
            do { _ = try CUDA.load() } catch {
                throw ValidationErrorText("--backend cuda: no usable CUDA driver on this machine (\(error)); use --backend cpu")
            }
            throw ValidationErrorText(
                "--backend cuda: the GPU model is not built yet (only the KV-cache manager and the attention kernels "
                + "run on CUDA today); use --backend cpu or auto")
        }
    }

    /// Loads the model (pulling it if it is a known name not yet in the cache) and builds the engine.
    func makeEngine(defaultTokenBudget: Int = 256) throws -> (LLMEngine, GGUFFile) {
        _ = try resolvedBackend()  // before the download: a wrong backend should fail fast
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
        let llama = try CPULlamaModel(file: file)
        let tokenizer = try Tokenizer(file: file)
        let hp = llama.hyperparameters
        let store: any KVStore
        switch kv {
        case .vattention:
            let spec = KVCacheSpec(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, dtype: .fp32,
                                   maxSlots: slots, maxContext: maxContext, pageSize: pageKiB * 1024, layout: layout)
            store = VAttentionKVStore(manager: try KVCacheManager(spec: spec, backend: HostMemoryBackend(),
                                                                 memoryBudget: kvMiB << 20))
        case .paged:
            store = PagedKVStore(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim,
                                 elementType: .fp32, slots: slots, maxContext: maxContext, blockSize: blockSize,
                                 memoryBudget: kvMiB << 20)
        }
        let engine = LLMEngine(model: llama, tokenizer: tokenizer, kv: store,
                               configuration: EngineConfiguration(tokenBudget: tokenBudget ?? defaultTokenBudget,
                                                                  maxRunning: slots))
        return (engine, file)
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
