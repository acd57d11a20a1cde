// swift-tools-version: 6.2
import PackageDescription

// Layers, bottom to top (see docs/architecture.md):
//   CCUDA (C types + PFN typedefs) → CUDADriver (dlopen'd driver/NVRTC, typed wrappers)
//   CSystemShims (memfd) ─┐
//   VAttention (memory backends, PagePool, KVCacheManager)
//   Kernels (CPU reference attention; CUDA sources)
//   Model (GGUF reader, tokenizer)
//   vattn (CLI)
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
    ],
    targets: [
        .target(name: "CCUDA"),
        .target(name: "CSystemShims"),
        // A seeded generator shared by randomized tests and the synthetic workloads of `vattn bench`.
        .target(name: "Randomness"),
        .target(name: "CUDADriver", dependencies: ["CCUDA"]),
        // CUDA C++ kernels: real .cu files in Sources/CUDAKernels/cuda, embedded at build time, compiled by NVRTC.
        .executableTarget(name: "embed-cuda-sources"),
        .plugin(name: "EmbedCUDASources", capability: .buildTool(), dependencies: ["embed-cuda-sources"]),
        .target(name: "CUDAKernels", dependencies: ["CUDADriver", "CCUDA"], exclude: ["cuda"],
                plugins: ["EmbedCUDASources"]),
        .target(name: "VAttention", dependencies: ["CUDADriver", "CSystemShims"]),
        .target(name: "Kernels", swiftSettings: optimized),
        .target(name: "CVAttentionABI"),
        .target(name: "VAttentionC", dependencies: ["CVAttentionABI", "VAttention", "CUDADriver"]),
        .target(name: "Model", dependencies: ["CSystemShims"], swiftSettings: optimized),
        // The serving engine: Llama forward (CPU), KV stores (vAttention / paged), sampler, scheduler.
        .target(name: "Engine", dependencies: ["Model", "Kernels", "VAttention", "Randomness"],
                swiftSettings: optimized),
        .executableTarget(
            name: "vattn",
            dependencies: [
                "VAttention", "CUDADriver", "CUDAKernels", "Kernels", "Randomness", "Engine", "Model",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "CUDADriverTests", dependencies: ["CUDADriver"]),
        .testTarget(name: "VAttentionTests", dependencies: ["VAttention", "CUDADriver", "CUDAKernels", "Randomness"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "Randomness"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Model", "Kernels", "VAttention"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Randomness"], exclude: ["Fixtures"]),
    ]
)
