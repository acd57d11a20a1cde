import ArgumentParser
import Engine
import Model
import Support
import VAttention

/// Options shared by every command that runs the model: parsed and checked here, built by `EngineBuilder` from the
/// `EngineConfig` they make.
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

    /// `--max-context` as asked for (before it is fitted to the model and the KV pool: see
    /// `EngineBuilder.makeKVStore`).
    var maxContext: Int { maxContextOption ?? EngineConfig.defaultMaxContext }

    /// What `--model` names (`--dummy-weights`: seeded random weights of that shape).
    var modelSource: ModelSource {
        dummyWeights ? .dummy(shape: model, seed: dummySeed) : ModelSource(nameOrPath: model)
    }

    /// The engine these options describe; `defaultTokenBudget` where `--token-budget` is not given.
    func engineConfig(defaultTokenBudget: Int = 256) -> EngineConfig {
        EngineConfig(model: modelSource, backend: backend.engineBackend,
                     kv: kv == .paged ? .paged(blockSize: blockSize) : .vattention(layout: layout, cpuPageSize: pageKiB * 1024),
                     slots: slots, maxContext: maxContextOption, tokenBudget: tokenBudget ?? defaultTokenBudget,
                     kvBudgetBytes: kvMiB.map { $0 << 20 }, cpuMatmul: requestedCPUMatmul, cudaGraphs: cudaGraphs)
    }

    /// The builder of that engine; its notes go to standard error.
    func engineBuilder(defaultTokenBudget: Int = 256) -> EngineBuilder {
        EngineBuilder(engineConfig(defaultTokenBudget: defaultTokenBudget), log: printErr)
    }

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
    enum ModelBackend: String, ExpressibleByArgument, CaseIterable {
        case auto, cpu, cuda

        var engineBackend: EngineConfig.Backend {
            switch self {
            case .auto: .auto
            case .cpu: .cpu
            case .cuda: .cuda
            }
        }
    }
}

extension LoadedModel {
    /// The tokenizer, or an error saying why `vattn command` cannot run on this model.
    func requireTokenizer(for command: String) throws -> Tokenizer {
        guard let tokenizer else {
            throw ValidationErrorText("vattn \(command) needs text, but \(name) has no tokenizer"
                + (weights is DummyWeights ? " (--dummy-weights): use `vattn bench serve`, which runs on token ids" : ""))
        }
        return tokenizer
    }
}

/// An error said in words ("Error: …" and exit status 1, without the usage ArgumentParser adds to a
/// `ValidationError`).
struct ValidationErrorText: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

extension KVCacheSpec.Layout: ExpressibleByArgument {}

extension CPUInstructionSet {
    /// The spelling of `--cpu-matmul`.
    var optionName: String { ModelOptions.CPUMatmulChoice.allCases.first { $0.instructionSet == self }!.rawValue }
}
