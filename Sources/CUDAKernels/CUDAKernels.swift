import CUDADriver

/// Compiles an embedded `.cu` file (see `cuda/`) for a device with NVRTC (cached) and loads it. `architecture`
/// overrides the device's own (e.g. `sm_90a` for the Hopper-only warpgroup instructions).
public func loadKernelModule(_ file: String, device: CUDADevice, compiler: NVRTC,
                             architecture: String? = nil) throws -> CUDAModule {
    guard let source = CUDASources.files[file] else {
        preconditionFailure("no embedded CUDA source named \(file); known: \(CUDASources.files.keys.sorted())")
    }
    let cubin = try compiler.compile(source: source, name: file,
                                     architecture: try architecture ?? device.architecture(),
                                     options: kernelCompileOptions, headers: embeddedHeaders)
    return try CUDAModule(device.cuda, image: cubin, name: file)
}

/// The NVRTC options every embedded source is compiled with (NVRTC adds the architecture and `--std=c++17`).
public let kernelCompileOptions = ["-default-device", "--use_fast_math"]

/// Every embedded header — the `.cuh` files of `cuda/` and `kernel_params.h` — offered to `#include "…"` by name.
public var embeddedHeaders: [String: String] {
    CUDASources.files.filter { $0.key.hasSuffix(".cuh") || $0.key.hasSuffix(".h") }
}

/// A kernel the Swift side launches: the embedded file that defines it, its `extern "C"` name, and the C struct
/// (`kernel_params.h`) that is its one parameter. Each launcher lists its kernels (`LlamaKernels.signatures`, …):
/// the lists are what it loads, and a CPU test checks them against the embedded sources.
public struct KernelSignature: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var name: String
    /// The parameter struct's C name, e.g. `EmbedRowsParams`.
    public var parameter: String

    public init<Params: BitwiseCopyable>(file: String, name: String, _: Params.Type) {
        self.file = file
        self.name = name
        parameter = "\(Params.self)"
    }

    public var description: String { "\(file): \(name)(const \(parameter) p)" }
}

extension CUDAModule {
    /// The kernel a signature names (it must be this module's file).
    func kernel<Params: BitwiseCopyable>(_ signature: KernelSignature, _ type: Params.Type) throws
        -> CUDAKernel<Params>
    {
        precondition(signature.file == name && signature.parameter == "\(Params.self)", "\(signature) in \(name)")
        return try kernel(signature.name, type)
    }
}
