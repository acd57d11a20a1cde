import CCUDA

/// A loaded CUBIN/PTX module (cuModuleLoadData) and the functions in it.
public final class CUDAModule: @unchecked Sendable {
    public let cuda: CUDA
    /// What the module was built from (e.g. `llama.cu`), for error messages.
    public let name: String
    let handle: CUmodule?

    public init(_ cuda: CUDA, image: [UInt8], name: String = "module") throws(CUDAError) {
        self.cuda = cuda
        self.name = name
        let (r, m) = image.withUnsafeBytes { cuda.api.moduleLoadData($0.baseAddress!) }
        try cuda.check(r, "cuModuleLoadData")
        handle = m
    }

    deinit { _ = cuda.api.moduleUnload(handle) }

    /// The function `name` (an `extern "C"` kernel). A name the module lacks throws an error naming the kernel and
    /// the module.
    public func function(_ name: String) throws(CUDAError) -> CUDAFunction {
        let (r, f) = cuda.api.moduleGetFunction(handle, name)
        if r != 0 {
            throw CUDAError(code: r, name: cuda.api.errorName(r), call: "cuModuleGetFunction(\(name))",
                            message: "\(self.name) has no kernel named \(name) (\(cuda.api.errorString(r)))")
        }
        return CUDAFunction(module: self, handle: f)
    }

    /// The kernel `name`, whose one parameter is a `Params` struct passed by value (`extern "C" __global__ void
    /// name(const Params p)`, the structs of `kernel_params.h`).
    public func kernel<Params: BitwiseCopyable>(_ name: String, _: Params.Type) throws(CUDAError)
        -> CUDAKernel<Params>
    {
        CUDAKernel(name: name, function: try function(name))
    }
}

public struct CUDAFunction: @unchecked Sendable {
    let module: CUDAModule
    let handle: CUfunction?

    /// Sets a function attribute (cuFuncSetAttribute).
    public func setAttribute(_ attribute: Int32, _ value: Int32) throws(CUDAError) {
        try module.cuda.check(module.cuda.api.funcSetAttribute(handle, attribute, value), "cuFuncSetAttribute")
    }

    /// Allows up to `bytes` of dynamic shared memory per block (needed above the device's default per-block limit).
    public func setMaxDynamicSharedMemory(_ bytes: Int) throws(CUDAError) {
        try setAttribute(Int32(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES_), Int32(bytes))
    }

    /// The share of the SM's unified L1/shared memory the function prefers as shared memory, in percent (a hint).
    public func setPreferredSharedMemoryCarveout(percent: Int) throws(CUDAError) {
        try setAttribute(Int32(CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT_), Int32(percent))
    }

    /// Launches with `parameters`: the kernel's parameter list as one pointer per parameter (cuLaunchKernel's
    /// `kernelParams`), valid for the call only (the driver copies the values at launch; so does stream capture).
    func launch(grid: (UInt32, UInt32, UInt32), block: (UInt32, UInt32, UInt32), sharedBytes: UInt32 = 0,
                       stream: CUDAStream?, parameters: UnsafeMutablePointer<UnsafeMutableRawPointer?>)
        throws(CUDAError)
    {
        let r = module.cuda.api.launchKernel(handle, grid, block, sharedBytes, stream?.handle, parameters)
        try module.cuda.check(r, "cuLaunchKernel")
    }
}

/// A kernel whose one parameter is a `Params` struct (a C struct of `kernel_params.h`, so Swift and NVRTC see the same
/// layout), passed by value: `extern "C" __global__ void name(const Params p)`. Get one from `CUDAModule.kernel`.
public struct CUDAKernel<Params: BitwiseCopyable>: @unchecked Sendable {
    public let name: String
    public let function: CUDAFunction

    /// Launches with `params` as the kernel's argument: cuLaunchKernel gets one parameter pointer, to a copy of
    /// `params` in a zeroed buffer of the struct's C size (`stride`: tail padding included) that lives for the call.
    public func launch(grid: (UInt32, UInt32, UInt32), block: (UInt32, UInt32, UInt32), sharedBytes: UInt32 = 0,
                       stream: CUDAStream?, _ params: Params) throws(CUDAError) {
        let r = withUnsafeTemporaryAllocation(byteCount: MemoryLayout<Params>.stride,
                                              alignment: MemoryLayout<Params>.alignment) { buffer in
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            buffer.storeBytes(of: params, as: Params.self)
            var slot: UnsafeMutableRawPointer? = buffer.baseAddress
            return withUnsafeMutablePointer(to: &slot) { pointer in
                function.module.cuda.api.launchKernel(function.handle, grid, block, sharedBytes, stream?.handle,
                                                      pointer)
            }
        }
        try function.module.cuda.check(r, "cuLaunchKernel")
    }
}
