import ArgumentParser
import Lab
import Model

// `vattn check …`: option parsing; the checks themselves are in the Lab target. A check that finds failures
// returns false: exit status 1.

struct CheckCUDA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cuda",
        abstract: "On a GPU: random request lifecycles where a kernel writes and re-reads every token through the "
            + "manager's virtual addresses, with the background mapper on, for both layouts.")

    @Option(help: "Lifecycle operations per layout.")
    var operations = 300
    @Option(help: "Random seed (default: from the clock).")
    var seed: UInt64?
    @Option(help: "Cases to run: lifecycle, zero-page, graph (comma separated).")
    var cases = "lifecycle,zero-page,graph"

    func run() throws {
        var lab = CUDACheck()
        lab.operations = operations
        lab.seed = seed
        lab.cases = cases
        if try !runLab({ try lab.run() }) { throw ExitCode.failure }
    }
}

struct CheckPrefill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prefill",
        abstract: "On a GPU: causal/chunked prefill attention kernels (K/V in a real KVCacheManager, both layouts, and "
            + "the paged twins) against the CPU reference, on fresh random inputs with NaN-poisoned outputs.")

    @Option(help: "Random seed (default: from the clock).")
    var seed: UInt64?

    func run() throws {
        var lab = PrefillCheck()
        lab.seed = seed
        if try !runLab({ try lab.run() }) { throw ExitCode.failure }
    }
}

struct CheckAttention: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "On a GPU: decode attention kernels (contiguous through a KVCacheManager, both layouts, and paged "
            + "16/256) and the KV append kernels against the CPU reference, bf16 and fp16, d 64/128, GQA 1/3/4/8.")

    @Option(help: "Random seed (default: from the clock).")
    var seed: UInt64?

    func run() throws {
        var lab = AttentionCheck()
        lab.seed = seed
        if try !runLab({ try lab.run() }) { throw ExitCode.failure }
    }
}

/// The GPU model against HF transformers (the fixtures the CPU tests use), in every KV mode; the engine on the GPU
/// (batched = alone, vAttention = paged); the GPU sampler against the CPU rule.
struct CheckModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Check the CUDA Llama forward, engine and sampler against HF fixtures and the CPU reference.")

    @Option(help: "The HF reference outputs (made by scripts/fixtures/make_forward_fixtures.py on the GPU machine).")
    var fixture = "Tests/EngineTests/Fixtures/smollm2_forward.json"
    @Option(help: "Model: a short name from `vattn models list` or a .gguf path.")
    var model = ModelStore.defaultModel
    @Option(help: "Largest |ours − HF| allowed on HF's top-5 logits. bf16 weights and activations (HF: fp32).")
    var tolerance: Double = 0.75
    @Option(help: "Greedy tokens that must equal HF's, per prompt.")
    var greedyPrefix = 8

    func run() throws {
        var lab = ModelCheck()
        lab.fixture = fixture
        lab.model = model
        lab.tolerance = tolerance
        lab.greedyPrefix = greedyPrefix
        if try !runLab({ try lab.run() }) { throw ExitCode.failure }
    }
}
