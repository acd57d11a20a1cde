import ArgumentParser
import Lab

@main
struct Vattn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vattn",
        abstract: "vAttention: LLM KV-cache memory that stays contiguous in virtual memory, backed on demand.",
        discussion: """
            The KV cache of every request lives in one huge virtual tensor per layer; physical pages (2 MB on a GPU, \
            any multiple of 4 KB on the CPU) are mapped underneath as requests grow, one step ahead, by a \
            background thread.

            With no subcommand, `vattn` runs the demo (`vattn demo`): it fetches a small model, serves a burst of \
            chat requests on this machine and reports what they cost.
            """,
        subcommands: [Demo.self, Chat.self, Generate.self, Serve.self, Bench.self, Check.self, Models.self],
        defaultSubcommand: Demo.self)
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the memory manager, the kernels, the CPU engine and serving.",
        subcommands: [BenchAlloc.self, BenchServe.self, BenchCPU.self, BenchTrace.self, BenchPrefill.self, BenchAttention.self, BenchDecode.self, BenchPrompt.self, BenchMapping.self])
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Correctness checks that need hardware CI does not have (a GPU).",
        subcommands: [CheckCUDA.self, CheckPrefill.self, CheckAttention.self, CheckModel.self])
}

extension BackendChoice: ExpressibleByArgument {}
