import CCUDA

/// One kernel argument, passed by value to `cuLaunchKernel`.
public enum KernelArgument: Sendable {
    case pointer(UInt64)
    case int32(Int32)
    case int64(Int64)
    case float(Float)
}

/// A loaded CUBIN/PTX module.
public final class CUDAModule: @unchecked Sendable {
    public let cuda: CUDA
    let handle: CUmodule?

    public init(_ cuda: CUDA, image: [UInt8]) throws(CUDAError) {
        self.cuda = cuda
        let (r, m) = image.withUnsafeBytes { cuda.api.moduleLoadData($0.baseAddress!) }
        try cuda.check(r, "cuModuleLoadData")
        handle = m
    }

    deinit { _ = cuda.api.moduleUnload(handle) }

    public func function(_ name: String) throws(CUDAError) -> CUDAFunction {
        let (r, f) = cuda.api.moduleGetFunction(handle, name)
        try cuda.check(r, "cuModuleGetFunction")
        return CUDAFunction(module: self, handle: f)
    }
}

public struct CUDAFunction: @unchecked Sendable {
    let module: CUDAModule
    let handle: CUfunction?

    /// Sets a function attribute (cuFuncSetAttribute).
    public func setAttribute(_ attribute: Int32, _ value: Int32) throws(CUDAError) {
        try module.cuda.check(module.cuda.api.funcSetAttribute(handle, attribute, value), "cuFuncSetAttribute")
    }

    /// Allows up to `bytes` of dynamic shared memory per block (needed above 48 KB).
    public func setMaxDynamicSharedMemory(_ bytes: Int) throws(CUDAError) {
        try setAttribute(Int32(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES_), Int32(bytes))
    }

    /// Launches with arguments packed as the kernel's parameter list (each argument's bytes, by pointer).
    public func launch(grid: (UInt32, UInt32, UInt32), block: (UInt32, UInt32, UInt32), sharedBytes: UInt32 = 0,
                       stream: CUDAStream?, _ arguments: [KernelArgument]) throws(CUDAError) {
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(arguments.count, 1) * 8, alignment: 8)
        defer { storage.deallocate() }
        let params = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: max(arguments.count, 1))
        defer { params.deallocate() }
        for (i, a) in arguments.enumerated() {
            let slot = storage + i * 8
            switch a {
            case .pointer(let v): slot.storeBytes(of: v, as: UInt64.self)
            case .int32(let v): slot.storeBytes(of: v, as: Int32.self)
            case .int64(let v): slot.storeBytes(of: v, as: Int64.self)
            case .float(let v): slot.storeBytes(of: v, as: Float.self)
            }
            params[i] = slot
        }
        let r = module.cuda.api.launchKernel(handle, grid, block, sharedBytes, stream?.handle, params)
        try module.cuda.check(r, "cuLaunchKernel")
    }
}
