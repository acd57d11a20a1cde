// swift-tools-version: 6.2
import PackageDescription

// Layers, bottom to top (see docs/architecture.md):
//   CCUDA (C types + PFN typedefs) → CUDADriver (dlopen'd driver/NVRTC, typed wrappers)
//   CSystemShims (memfd) ─┐
//   VAttention (memory backends, PagePool, KVCacheManager)
//   Kernels (CPU reference attention; CUDA sources)
//   Model (GGUF reader, tokenizer, model sources)
//   Engine (model runners, KV stores, scheduler; EngineConfig → EngineBuilder → LLMEngine)
//   Lab (benches and checks), Server (HTTP)
//   vattn (CLI: commands and option parsing)
// Support (formatting, the clock, stdout/stderr lines) sits under all of them.
// Numeric code is optimised even in debug builds: the tests run a real 135M-parameter model, which unoptimised
// Swift makes ~50× slower.
let optimized: [SwiftSetting] = [.unsafeFlags(["-O"])]

let package = Package(
    name: "VAttention",
    products: [
        .library(name: "VAttention", targets: ["VAttention"]),
        .executable(name: "vattn", targets: ["vattn"]),
        // The C ABI (include/vattention.h) as a shared library, for Python (python/) and C/C++ callers.
        .library(name: "vattention_c", type: .dynamic, targets: ["VAttentionC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // The OpenAI-compatible server (Sources/Server). No traits: no swift-configuration, no full Foundation.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .target(name: "CCUDA"),
        // Plumbing every layer shares: threads and a TSan-visible lock, report formatting, the monotonic clock,
        // unbuffered stdout/stderr lines.
        .target(name: "Support"),
        .target(name: "CSystemShims"),
        // Integer matmul kernels per instruction set (portable C, AVX2, AVX-512 VNNI), picked at run time.
        .target(name: "CQuantKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // The forward pass's float kernels per instruction set (attention tile, RMSNorm, RoPE, SiLU·mul), picked with
        // the matmul's dispatch. No contraction: each kernel's roundings are the ones its source asks for.
        .target(name: "CFloatKernels", dependencies: ["CQuantKernels"], cSettings: [.unsafeFlags(["-O3", "-ffp-contract=off"])]),
        // A seeded generator shared by randomized tests and the synthetic workloads of `vattn bench`.
        .target(name: "Randomness"),
        .target(name: "CUDADriver", dependencies: ["CCUDA"]),
        // For tests: a driver table that records calls and keeps the driver's threading rule (no context → 201).
        .target(name: "CUDADriverTesting", dependencies: ["CUDADriver", "CCUDA", "VAttention", "Support"]),
        // CUDA C++ kernels: real .cu files in Sources/CUDAKernels/cuda, embedded at build time, compiled by NVRTC.
        .executableTarget(name: "embed-cuda-sources"),
        .plugin(name: "EmbedCUDASources", capability: .buildTool(), dependencies: ["embed-cuda-sources"]),
        // The kernels' parameter structs (include/kernel_params.h), read by Swift and, embedded, by NVRTC.
        .target(name: "CKernelParams"),
        .target(name: "CUDAKernels", dependencies: ["CUDADriver", "CKernelParams", "VAttention"], exclude: ["cuda"],
                plugins: ["EmbedCUDASources"]),
        .target(name: "VAttention", dependencies: ["CUDADriver", "CSystemShims", "Support"]),
        .target(name: "Kernels", dependencies: ["CFloatKernels", "CQuantKernels", "Support", "VAttention"],
                swiftSettings: optimized),
        .target(name: "CVAttentionABI"),
        .target(name: "VAttentionC", dependencies: ["CVAttentionABI", "VAttention", "CUDADriver"]),
        .target(name: "Model", dependencies: ["CSystemShims", "Randomness"], swiftSettings: optimized),
        // The serving engine: Llama forward (CPU), KV stores (vAttention / paged), sampler, scheduler.
        .target(name: "Engine", dependencies: ["Model", "Kernels", "CQuantKernels", "VAttention", "Randomness", "CUDADriver", "CUDAKernels",
                                               "Support"],
                swiftSettings: optimized),
        // The benches and checks behind `vattn bench …` and `vattn check …` (no argument parsing: the CLI does that).
        .target(name: "Lab", dependencies: ["Engine", "Model", "VAttention", "CUDADriver", "CUDAKernels", "Kernels",
                                            "Randomness", "Support"]),
        // OpenAI-compatible HTTP server: one task owns the engine; Hummingbird routes; Prometheus metrics.
        .target(name: "Server", dependencies: [
            "Engine", "Model", "VAttention", "Support",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .executableTarget(
            name: "vattn",
            dependencies: [
                "VAttention", "Kernels", "Engine", "Model", "Server", "Lab", "Support",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // libFuzzer targets (GGUF reader, request bodies, tokenizer; scripts/fuzz.sh); an ordinary build replays a corpus.
        .target(name: "CLibFuzzer"),
        .executableTarget(name: "vattn-fuzz", dependencies: ["Model", "Server", "CLibFuzzer"]),
        .testTarget(name: "CUDADriverTests", dependencies: ["CUDADriver"]),
        .testTarget(name: "VAttentionTests", dependencies: ["VAttention", "CUDADriver", "CUDADriverTesting", "CUDAKernels",
                                                      "CKernelParams", "Support", "Randomness", "VAttentionC",
                                                      "CVAttentionABI"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "Randomness"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Model", "Kernels", "VAttention", "Randomness"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "ServerTests", dependencies: [
            "Server", "Engine", "Model", "VAttention", "CUDADriver", "CUDADriverTesting", "Support",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Randomness"], exclude: ["Fixtures"]),
        .testTarget(name: "LabTests", dependencies: ["Lab", "Support"]),
    ]
)
