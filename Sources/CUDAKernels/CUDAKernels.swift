import CUDADriver

/// Compiles an embedded `.cu` file (see `cuda/`) for a device with NVRTC (cached) and loads it. `architecture`
/// overrides the device's own (e.g. `sm_90a` for the Hopper-only warpgroup instructions).
public func loadKernelModule(_ file: String, device: CUDADevice, compiler: NVRTC,
                             architecture: String? = nil) throws -> CUDAModule {
    guard let source = CUDASources.files[file] else {
        preconditionFailure("no embedded CUDA source named \(file); known: \(CUDASources.files.keys.sorted())")
    }
    // Every embedded header (`*.cuh`) is offered to `#include "…"`.
    let headers = CUDASources.files.filter { $0.key.hasSuffix(".cuh") }
    let cubin = try compiler.compile(source: source, name: file, architecture: try architecture ?? device.architecture(),
                                     options: ["-default-device", "--use_fast_math"], headers: headers)
    return try CUDAModule(device.cuda, image: cubin)
}
