// swift-tools-version: 6.2
import PackageDescription

// Layers, bottom to top (see docs/architecture.md):
//   CCUDA (C types + PFN typedefs) → CUDADriver (dlopen'd driver/NVRTC, typed wrappers)
//   CSystemShims (memfd) ─┐
//   VAttention (memory backends, PagePool, KVCacheManager)
//   Kernels (CPU reference attention; CUDA sources)
//   Model (GGUF reader, tokenizer)
//   vattn (CLI)
let package = Package(
    name: "VAttention",
    products: [
        .library(name: "VAttention", targets: ["VAttention"]),
        .executable(name: "vattn", targets: ["vattn"]),
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
        .target(name: "Kernels"),
        .target(name: "Model", dependencies: ["CSystemShims"]),
        .executableTarget(
            name: "vattn",
            dependencies: [
                "VAttention", "CUDADriver", "CUDAKernels", "Kernels", "Randomness",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "CUDADriverTests", dependencies: ["CUDADriver"]),
        .testTarget(name: "VAttentionTests", dependencies: ["VAttention", "CUDADriver", "CUDAKernels", "Randomness"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "Randomness"]),
        .testTarget(name: "ModelTests", dependencies: ["Model", "Randomness"], exclude: ["Fixtures"]),
    ]
)
