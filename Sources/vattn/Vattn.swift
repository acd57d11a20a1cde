import ArgumentParser
import Engine
import CUDADriver
import VAttention

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

enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case host, cuda
}

/// A backend plus what keeps it alive (device, stream) for the length of a command.
struct BackendHandle {
    let backend: any MemoryBackend
    let device: CUDADevice?
    let stream: CUDAStream?
    let description: String

    static func make(_ choice: BackendChoice, zeroPage: Bool = false) throws -> BackendHandle {
        switch choice {
        case .host:
            return BackendHandle(backend: HostMemoryBackend(zeroPage: zeroPage), device: nil, stream: nil,
                                 description: "host (mmap + memfd)")
        case .cuda:
            let cuda = try CUDA.load()
            let device = try CUDADevice(cuda)
            let stream = try CUDAStream(cuda)
            let backend = try CUDAMemoryBackend(device: device, stream: stream, zeroPage: zeroPage)
            return BackendHandle(backend: backend, device: device, stream: stream,
                                 description: "cuda: \(try device.name()), driver \(cuda.driverVersion)")
        }
    }
}
