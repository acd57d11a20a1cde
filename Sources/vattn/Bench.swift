import ArgumentParser
import Lab
import Model
import VAttention

// `vattn bench …`: option parsing; the benches themselves are in the Lab target.

struct BenchAlloc: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alloc",
        abstract: "Measure page create/map/unmap/release latency, mapping bandwidth, and a 256-request decode run.",
        discussion: """
            The decode run uses the Llama-3-8B KV shape (32 layers, 8 KV heads × 128, bf16). Every step each running \
            request grows by one token, finished requests leave and new ones arrive with random prompt and output \
            lengths; between steps the program sleeps for --step-ms to stand in for the model's forward pass, which \
            is when the background mapper works. It reports the time `step` spends on the critical path, with the \
            mapper off and on, for both layouts, and how much mapped memory holds no token (waste).
            """)

    @Option(help: "Memory backend: host (mmap + memfd) or cuda (cuMem* on GPU 0).")
    var backend: BackendChoice = .host
    @Option(name: .customLong("page-kib"), help: "Physical page size in KiB (default 2048: the GPU's page; on host, smaller pages multiply kernel mappings, capped by vm.max_map_count).")
    var pageKiB: Int?
    @Option(name: .customLong("budget-gib"), help: "Physical memory budget for the decode run, GiB (default: 60 for cuda, 48 for host, sparse, or the machine's memory if less; at most the backend's physical memory).")
    var budgetGiB: Double?
    @Option(help: "Request slots (batch size) in the decode run.")
    var slots = 256
    @Option(help: "Max context per request in the decode run.")
    var maxContext = 4096
    @Option(help: "Measured steps per configuration (after a warm-up step that fills every slot).")
    var steps = 500
    @Option(help: "Simulated model time per step, ms (the mapper's window).")
    var stepMs = 20.0
    @Option(help: "New requests admitted per step at most.")
    var arrivalsPerStep = 4
    @Option(help: "Pages timed one by one for the per-operation latencies.")
    var microPages = 256
    @Option(help: "Random seed of the workload.")
    var seed: UInt64 = 42
    @Option(help: "Where to write the JSON result.")
    var json: String?

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1, got \(steps)") }
        guard (1...1 << 16).contains(slots) else { throw ValidationError("--slots must be between 1 and 65536, got \(slots)") }
        guard (2...1 << 24).contains(maxContext) else {
            throw ValidationError("--max-context must be between 2 and \(1 << 24) tokens, got \(maxContext)")
        }
        guard stepMs >= 0, stepMs.isFinite else { throw ValidationError("--step-ms must be a number ≥ 0, got \(stepMs)") }
        guard arrivalsPerStep >= 1 else {
            throw ValidationError("--arrivals-per-step must be at least 1, got \(arrivalsPerStep)")
        }
        guard microPages >= 1 else { throw ValidationError("--micro-pages must be at least 1, got \(microPages)") }
        if let pageKiB, !(1...1 << 20).contains(pageKiB) || pageKiB % 4 != 0 {
            throw ValidationError("--page-kib must be a positive multiple of 4 (at most \(1 << 20)), got \(pageKiB)")
        }
        if let budgetGiB, !(budgetGiB > 0 && budgetGiB <= Double(1 << 20)) {
            throw ValidationError("--budget-gib must be a positive number of GiB, got \(budgetGiB)")
        }
    }

    func run() throws {
        var lab = AllocBench()
        lab.backend = backend
        lab.pageKiB = pageKiB
        lab.budgetGiB = budgetGiB
        lab.slots = slots
        lab.maxContext = maxContext
        lab.steps = steps
        lab.stepMs = stepMs
        lab.arrivalsPerStep = arrivalsPerStep
        lab.microPages = microPages
        lab.seed = seed
        lab.json = json
        try runLab { try lab.run() }
    }
}

struct BenchAttention: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "GPU decode attention, bf16, 32 query / 8 KV heads, d=128: µs per call, GB/s, fraction of copy "
            + "bandwidth; contiguous (KVCacheManager, both layouts) vs paged (16, 256).",
        discussion: """
            Per call: the split kernel, plus the merge kernel where the splits merge in a separate launch (--merge). \
            Timing: CUDA events around groups of back-to-back calls \
            (no synchronisation inside a group); the median group mean is reported. Calls alternate between two \
            layers so consecutive calls read different K/V (each layer's K+V is larger than L2 at every shape). \
            Bytes = K+V read once. The copy ceiling is a 16-byte device-to-device copy kernel, bytes read + written.
            Graph timing (the way the peers were timed: docs/results/anchors.md): --graph-calls back-to-back calls captured in \
            one CUDA graph; each replay is timed with events; median per call over --groups replays. The graph's \
            output is checked bit for bit against the plain launches' output.
            """)

    @Option(help: "Shapes as batch x context, comma separated.")
    var shapes = "1x32768,16x8192,64x4096,128x2048,256x1024"
    @Option(help: "Calls per timed group.")
    var callsPerGroup = 10
    @Option(help: "Timed groups (median reported).")
    var groups = 30
    @Option(help: "Calls captured per CUDA graph for the graph timing (0: no graph timing).")
    var graphCalls = 20
    @Option(help: """
        Split-KV merges to measure, comma separated: auto (the shape's own choice), block (a pair's splits are one \
        block's warps, merged in shared memory), separate (a second launch). \
        A mode that does not apply to a shape, or launches the same kernels as an earlier one there, is skipped.
        """)
    var merge = "auto"
    @Option(help: "Override the split size (tokens, multiple of 32).")
    var chunk: Int?
    @Option(help: "Pipeline depths of the split kernel to measure (comma separated, 2…8).")
    var stages = "3"
    @Option(help: "Storages to run: contiguous-perLayer, contiguous-mega, paged-16, paged-256 (comma separated).")
    var storages = "contiguous-perLayer,contiguous-mega,paged-16,paged-256"
    @Option(help: "Where to write the JSON result.")
    var json: String?
    @Option(help: "Random seed.")
    var seed: UInt64 = 42

    func run() throws {
        var lab = AttentionBench()
        lab.shapes = shapes
        lab.callsPerGroup = callsPerGroup
        lab.groups = groups
        lab.graphCalls = graphCalls
        lab.merge = merge
        lab.chunk = chunk
        lab.stages = stages
        lab.storages = storages
        lab.json = json
        lab.seed = seed
        try runLab { try lab.run() }
    }
}

struct BenchPrefill: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prefill",
        abstract: "On a GPU: causal prefill attention (single sequence 2K/8K/32K and a 2K chunk at offset 30K), bf16, "
            + "32 query / 8 KV heads, d=128; ours on the KVCacheManager (per-layer and mega layout) vs paged 16/256.",
        discussion: """
            FLOPs: causal 4·L²·H·D/2; a chunk of n queries at offset o: 4·H·D·(n·o + n(n+1)/2) (each query at \
            position o+i reads o+i+1 keys). Time: median over --iterations launches, each between two CUDA events.
            """)

    @Option(help: "Timed launches per case and kernel.")
    var iterations = 20
    @Option(help: "Warm-up launches per case and kernel.")
    var warmup = 3
    @Option(help: "Layers of the KVCacheManager spec (the mega layout's token stride is layers × 2 KB).")
    var layers = 32
    @Option(help: "Write the results as JSON here.")
    var json: String?
    @Option(help: "Random seed (default: from the clock).")
    var seed: UInt64?

    func run() throws {
        var lab = PrefillBench()
        lab.iterations = iterations
        lab.warmup = warmup
        lab.layers = layers
        lab.json = json
        lab.seed = seed
        try runLab { try lab.run() }
    }
}

struct BenchServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Offline serving throughput: N requests at once through the engine; req/s, tok/s, TTFT, TPOT, KV memory.",
        discussion: """
            Requests come from --dataset sharegpt (the real ShareGPT trace, sampled as vLLM's benchmark does) or a \
            synthetic workload (lengths in tokens, uniform, scaled to what a 2-core CPU finishes in minutes; prompts \
            are random ordinary tokens):
              chat   prompt 16–384, output 16–256  (short prompts, long answers)
              arxiv  prompt 512–1536, output 32–128 (summarisation: long prompts, short answers)
            Every request generates exactly its output length (end-of-sequence ignored), as vLLM's benchmark does.
            """)

    @OptionGroup var options: ModelOptions
    @OptionGroup var data: DatasetOptions
    @Option(help: "Synthetic workload when there is no --dataset: chat or arxiv.") var workload: ServeBench.Workload = .chat
    @Option(help: "Where to write the JSON result.") var json: String?
    @Option(help: "Online serving: requests arrive as a Poisson process at this many per second, and time to first token counts from arrival (default: all at once, offline).")
    var rate: Double?

    func run() throws {
        var lab = ServeBench()
        lab.config = options.engineConfig()
        lab.data = data.selection
        lab.workload = workload
        lab.json = json
        lab.rate = rate
        try runLab { try lab.run() }
    }
}

extension ServeBench.Workload: ExpressibleByArgument {}

/// The CPU engine's forward pass timed the way llama.cpp's `llama-bench` and `llama-batched-bench` time theirs, for
/// `bench/cpu/llamacpp.sh` to compare on the same GGUF.
struct BenchCPU: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpu",
        abstract: "CPU forward pass throughput like llama-bench (ppN, tgN) and llama-batched-bench (N streams × "
            + "prompt + output): random token ids, greedy, medians of --repetitions.",
        discussion: """
            pp<P>: one prompt of P tokens in one forward pass, tokens/s (llama-bench -p P). \
            tg<N>: N decode steps of one sequence after --depth tokens of context, tokens/s (llama-bench -n N -d D). \
            Streams S: S prompts of --prompt tokens in one forward pass, then --generate decode steps of all S at \
            once; prompt tokens/s, output tokens/s and all tokens / all time (llama-batched-bench -npp -ntg -npl: \
            S_PP, S_TG, S).
            """)

    @OptionGroup var options: ModelOptions
    @Option(help: "Prompt lengths for the ppN tests, comma-separated.") var promptTests = "128,512"
    @Option(help: "Decode steps of the tgN tests.") var generateTest = 128
    @Option(help: "Context before the tgN test's decode steps, comma-separated (llama-bench -d).") var depths = "0"
    @Option(help: "Concurrent sequences of the batched tests, comma-separated.") var streams = "1,4,8,16"
    @Option(help: "Prompt tokens per sequence in the batched tests (llama-batched-bench -npp).") var prompt = 128
    @Option(help: "Output tokens per sequence in the batched tests (llama-batched-bench -ntg).") var generate = 128
    @Option(help: "Runs of each test; the median is reported.") var repetitions = 3
    @Option(help: "Where to write the results as JSON.") var json: String?

    func validate() throws {
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1") }
        for list in [promptTests, depths, streams] where CPUBench.parseList(list) == nil {
            throw ValidationError("'\(list)': expected comma-separated non-negative integers")
        }
    }

    func run() throws {
        var lab = CPUBench()
        lab.config = options.engineConfig()
        lab.promptTests = promptTests
        lab.generateTest = generateTest
        lab.depths = depths
        lab.streams = streams
        lab.prompt = prompt
        lab.generate = generate
        lab.repetitions = repetitions
        lab.json = json
        try runLab { try lab.run() }
    }
}

/// Where a serving benchmark's requests come from: the real ShareGPT trace (`--dataset sharegpt[:PATH]`), sampled
/// as vLLM's benchmark samples it, or a synthetic workload.
struct DatasetOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The ShareGPT V3 trace vLLM benchmarks with: `sharegpt` (the file scripts/fixtures/fetch_sharegpt.sh puts in "
            + "~/.cache/vattn/datasets, or $VATTN_DATA_DIR) or `sharegpt:PATH`. Sampled like vLLM's benchmark: seeded "
            + "shuffle, first human turn = prompt, its reply's token count = output length (EOS ignored), pairs with "
            + "fewer than 4 tokens on either side, prompts over 1024 tokens or prompt + output over 2048 (or the "
            + "context) dropped.", valueName: "sharegpt[:path]"))
    var dataset: String?
    @Option(help: "Tokenizer for --dataset when the model has none (dummy weights): a known model name or a .gguf file. Its token ids are the prompts; its counts the lengths.")
    var datasetTokenizer = ModelStore.defaultModel
    @Option(help: "Number of requests.")
    var requests = 32
    @Option(help: "Random seed of the sampling (the same seed gives the same requests).")
    var seed: UInt64 = 0

    func validate() throws {
        guard requests >= 1 else { throw ValidationError("--requests must be at least 1, got \(requests)") }
        if let d = dataset, d != "sharegpt", !d.hasPrefix("sharegpt:") {
            throw ValidationError("--dataset takes sharegpt or sharegpt:PATH, got '\(d)'")
        }
    }

    var selection: DatasetSelection {
        var s = DatasetSelection()
        s.dataset = dataset
        s.datasetTokenizer = datasetTokenizer
        s.requests = requests
        s.seed = seed
        return s
    }
}

struct BenchTrace: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Samples a serving trace from --dataset and writes it as JSON lines (the input of bench/http/loadgen.py).",
        discussion: """
            Each line is {"prompt_token_ids": [...], "output_len": N}. The sampling is `vattn bench serve \
            --dataset`'s, so with the same dataset, seed, count, tokenizer and context the offline benchmark and an \
            HTTP run over `vattn serve` see exactly the same requests.
            """)

    @OptionGroup var data: DatasetOptions
    @Option(help: "Tokenizer of the model that will serve the trace: a known model name or a .gguf file (for a dummy-weight model, the --dataset-tokenizer its server bench uses).")
    var tokenizer = ModelStore.defaultModel
    @Option(help: "Longest prompt + output, tokens (the server's --max-context).")
    var maxContext = 2048
    @Option(help: "Where to write the trace.")
    var out: String

    func validate() throws {
        if data.dataset == nil { throw ValidationError("--dataset is required") }
    }

    func run() throws {
        var lab = TraceBench()
        lab.data = data.selection
        lab.tokenizer = tokenizer
        lab.maxContext = maxContext
        lab.out = out
        try runLab { try lab.run() }
    }
}

/// What the model-level GPU benches share: a dummy-weight model of a named shape on the GPU, and KV stores of each
/// kind over the memory left.
struct GPUModelBenchOptions: ParsableArguments {
    @Option(help: "Model shape with seeded random bf16 weights (see `vattn models list`): llama-3-8b, yi-6b, smollm2-135m.")
    var shape = "llama-3-8b"
    @Option(help: "KV stores to compare, comma-separated: vattention, paged-16, paged-256.")
    var kv = "vattention,paged-16,paged-256"
    @Option(help: "vAttention layout: perLayer or mega.")
    var layout: KVCacheSpec.Layout = .perLayer
    @Option(help: "Share of the GPU memory left after weights and scratch given to the KV cache.")
    var kvShare = 0.9
    @Option(help: "Where to write the JSON result.")
    var json: String?
    @Flag(inversion: .prefixedEnableDisable, help: "Replay decode steps as CUDA graphs.")
    var cudaGraphs = true

    var setup: GPUModelBenchSetup {
        var s = GPUModelBenchSetup()
        s.shape = shape
        s.kv = kv
        s.layout = layout
        s.kvShare = kvShare
        s.json = json
        s.cudaGraphs = cudaGraphs
        return s
    }
}

/// Decode throughput vs batch size at a long context (the paper's decode experiment), vAttention vs paged, in the
/// real engine model (dummy weights: the same work as real ones). K/V content does not change the work, so the
/// context is backed (mapped) but not prefilled.
struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "GPU decode throughput vs batch size at a fixed context: vAttention vs paged, with the KV allocation bandwidth each batch needs.")

    @OptionGroup var options: GPUModelBenchOptions
    @Option(help: "Context (tokens already in the cache) of every sequence.") var context = 16384
    @Option(help: "Batch sizes, comma-separated (those that do not fit in memory are reported and skipped).")
    var batches = "1,2,4,8,16,24,32"
    @Option(help: "Timed decode steps per point.") var steps = 32
    @Flag(help: "Also time each phase of a step (GEMMs, attention, norms, sampling) with events; plain launches, no graphs.")
    var profile = false

    func run() throws {
        var lab = DecodeBench()
        lab.setup = options.setup
        lab.context = context
        lab.batches = batches
        lab.steps = steps
        lab.profile = profile
        try runLab { try lab.run() }
    }
}

/// Prompt (prefill) throughput vs context length, one sequence, whole prompt at once or in Sarathi chunks.
struct BenchPrompt: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prompt",
        abstract: "GPU prefill throughput vs prompt length, whole or chunked: vAttention vs paged.")

    @OptionGroup var options: GPUModelBenchOptions
    @Option(help: "Prompt lengths, comma-separated.") var lengths = "2048,4096,8192,16384,32768,65536"
    @Option(help: "Chunk sizes to compare, comma-separated (0 = the whole prompt in one step).") var chunks = "0,2048"

    func run() throws {
        var lab = PromptBench()
        lab.setup = options.setup
        lab.lengths = lengths
        lab.chunks = chunks
        try runLab { try lab.run() }
    }
}

/// Decode step latency over time while sequences grow across page boundaries, pages mapped on the critical path
/// (sync) vs by the background mapper one step ahead (the paper's Fig. 11).
struct BenchMapping: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mapping",
        abstract: "GPU decode step latency over time: vAttention with synchronous vs background page mapping.")

    @OptionGroup var options: GPUModelBenchOptions
    @Option(help: "Sequences decoding together.") var batch = 32
    @Option(help: "Context every sequence starts at.") var context = 16384
    @Option(help: "Decode steps timed (each adds a token to every sequence).") var steps = 2048

    func run() throws {
        var lab = MappingBench()
        lab.setup = options.setup
        lab.batch = batch
        lab.context = context
        lab.steps = steps
        try runLab { try lab.run() }
    }
}

/// Runs a bench or check of the Lab; a bad option value it finds (`LabUsageError`) is reported as ArgumentParser
/// reports one, with the command's usage.
func runLab<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as LabUsageError { throw ValidationError(e.description) }
}
