import CUDADriver

/// Compiles an embedded `.cu` file (see `cuda/`) for a device with NVRTC (cached) and loads it.
public func loadKernelModule(_ file: String, device: CUDADevice, compiler: NVRTC) throws -> CUDAModule {
    guard let source = CUDASources.files[file] else {
        preconditionFailure("no embedded CUDA source named \(file); known: \(CUDASources.files.keys.sorted())")
    }
    let cubin = try compiler.compile(source: source, name: file, architecture: try device.architecture(),
                                     options: ["-default-device", "--use_fast_math"])
    return try CUDAModule(device.cuda, image: cubin)
}
