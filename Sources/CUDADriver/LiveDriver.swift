import CCUDA
#if canImport(Glibc)
import Glibc
#endif

/// A C function pointer the live table captures. Function pointers into the driver are immutable and thread-safe.
private struct Fn<T>: @unchecked Sendable { let call: T }

extension DriverAPI {
    /// The CUDA version we ask `cuGetProcAddress` for: it picks the matching ABI of versioned entry points
    /// (e.g. the `_v2` variants of `cuMemAlloc`), which is why we never dlsym them by name.
    static let requestedCUDAVersion: Int32 = 12000

    /// Loads the real driver: `dlopen("libcuda.so.1")`, bootstraps `cuGetProcAddress` (the only dlsym), resolves every
    /// entry point through it, and calls `cuInit(0)`. This is the one place where raw driver calls are bound.
    public static func live(libraryPath: String = "libcuda.so.1") throws(CUDAError) -> DriverAPI {
        guard let handle = dlopen(libraryPath, RTLD_NOW | RTLD_LOCAL) else {
            let detail = dlerror().map { String(cString: $0) } ?? "dlopen returned NULL"
            throw .driverNotFound(detail)
        }
        let lookup: (String) -> UnsafeMutableRawPointer?
        if let v2 = dlsym(handle, "cuGetProcAddress_v2") {
            let gpa = unsafeBitCast(v2, to: PFN_cuGetProcAddress_v2.self)
            lookup = { name in
                var fn: UnsafeMutableRawPointer?
                var status: Int32 = 0
                return gpa(name, &fn, requestedCUDAVersion, 0, &status) == 0 ? fn : nil
            }
        } else if let v1 = dlsym(handle, "cuGetProcAddress") {
            let gpa = unsafeBitCast(v1, to: PFN_cuGetProcAddress_v1.self)
            lookup = { name in
                var fn: UnsafeMutableRawPointer?
                return gpa(name, &fn, requestedCUDAVersion, 0) == 0 ? fn : nil
            }
        } else {
            throw .missingSymbol("cuGetProcAddress")
        }
        func resolve<T>(_ name: String, as: T.Type) throws(CUDAError) -> Fn<T> {
            guard let p = lookup(name) else { throw .missingSymbol(name) }
            return Fn(call: unsafeBitCast(p, to: T.self))
        }

        let cuInit = try resolve("cuInit", as: PFN_cuInit.self)
        let getErrorName = try resolve("cuGetErrorName", as: PFN_cuGetErrorName.self)
        let getErrorString = try resolve("cuGetErrorString", as: PFN_cuGetErrorString.self)
        let driverGetVersion = try resolve("cuDriverGetVersion", as: PFN_cuDriverGetVersion.self)
        let deviceGetCount = try resolve("cuDeviceGetCount", as: PFN_cuDeviceGetCount.self)
        let deviceGet = try resolve("cuDeviceGet", as: PFN_cuDeviceGet.self)
        let deviceGetName = try resolve("cuDeviceGetName", as: PFN_cuDeviceGetName.self)
        let deviceGetAttribute = try resolve("cuDeviceGetAttribute", as: PFN_cuDeviceGetAttribute.self)
        let deviceTotalMem = try resolve("cuDeviceTotalMem", as: PFN_cuDeviceTotalMem.self)
        let ctxRetain = try resolve("cuDevicePrimaryCtxRetain", as: PFN_cuDevicePrimaryCtxRetain.self)
        let ctxRelease = try resolve("cuDevicePrimaryCtxRelease", as: PFN_cuDevicePrimaryCtxRelease.self)
        let ctxSetCurrent = try resolve("cuCtxSetCurrent", as: PFN_cuCtxSetCurrent.self)
        let ctxSynchronize = try resolve("cuCtxSynchronize", as: PFN_cuCtxSynchronize.self)
        let streamCreate = try resolve("cuStreamCreate", as: PFN_cuStreamCreate.self)
        let streamDestroy = try resolve("cuStreamDestroy", as: PFN_cuStreamDestroy.self)
        let streamSynchronize = try resolve("cuStreamSynchronize", as: PFN_cuStreamSynchronize.self)
        let eventCreate = try resolve("cuEventCreate", as: PFN_cuEventCreate.self)
        let eventDestroy = try resolve("cuEventDestroy", as: PFN_cuEventDestroy.self)
        let eventRecord = try resolve("cuEventRecord", as: PFN_cuEventRecord.self)
        let eventSynchronize = try resolve("cuEventSynchronize", as: PFN_cuEventSynchronize.self)
        let eventElapsedTime = try resolve("cuEventElapsedTime", as: PFN_cuEventElapsedTime.self)
        let memGetInfo = try resolve("cuMemGetInfo", as: PFN_cuMemGetInfo.self)
        let memAlloc = try resolve("cuMemAlloc", as: PFN_cuMemAlloc.self)
        let memFree = try resolve("cuMemFree", as: PFN_cuMemFree.self)
        let memcpyHtoD = try resolve("cuMemcpyHtoD", as: PFN_cuMemcpyHtoD.self)
        let memcpyDtoH = try resolve("cuMemcpyDtoH", as: PFN_cuMemcpyDtoH.self)
        let memsetD8 = try resolve("cuMemsetD8", as: PFN_cuMemsetD8.self)
        let addressReserve = try resolve("cuMemAddressReserve", as: PFN_cuMemAddressReserve.self)
        let addressFree = try resolve("cuMemAddressFree", as: PFN_cuMemAddressFree.self)
        let memCreate = try resolve("cuMemCreate", as: PFN_cuMemCreate.self)
        let memRelease = try resolve("cuMemRelease", as: PFN_cuMemRelease.self)
        let memMap = try resolve("cuMemMap", as: PFN_cuMemMap.self)
        let memUnmap = try resolve("cuMemUnmap", as: PFN_cuMemUnmap.self)
        let memSetAccess = try resolve("cuMemSetAccess", as: PFN_cuMemSetAccess.self)
        let granularity = try resolve("cuMemGetAllocationGranularity", as: PFN_cuMemGetAllocationGranularity.self)
        let moduleLoadData = try resolve("cuModuleLoadData", as: PFN_cuModuleLoadData.self)
        let moduleUnload = try resolve("cuModuleUnload", as: PFN_cuModuleUnload.self)
        let moduleGetFunction = try resolve("cuModuleGetFunction", as: PFN_cuModuleGetFunction.self)
        let funcSetAttribute = try resolve("cuFuncSetAttribute", as: PFN_cuFuncSetAttribute.self)
        let launchKernel = try resolve("cuLaunchKernel", as: PFN_cuLaunchKernel.self)
        let beginCapture = try resolve("cuStreamBeginCapture", as: PFN_cuStreamBeginCapture_v2.self)
        let endCapture = try resolve("cuStreamEndCapture", as: PFN_cuStreamEndCapture.self)
        let graphInstantiate = try resolve("cuGraphInstantiateWithFlags", as: PFN_cuGraphInstantiateWithFlags.self)
        let graphLaunch = try resolve("cuGraphLaunch", as: PFN_cuGraphLaunch.self)
        let graphExecDestroy = try resolve("cuGraphExecDestroy", as: PFN_cuGraphExecDestroy.self)
        let graphDestroy = try resolve("cuGraphDestroy", as: PFN_cuGraphDestroy.self)

        let initResult = cuInit.call(0)
        if initResult != 0 {
            var name: UnsafePointer<CChar>?
            _ = getErrorName.call(initResult, &name)
            throw CUDAError(code: initResult, name: name.map { String(cString: $0) } ?? "CUDA_ERROR_\(initResult)",
                            call: "cuInit", message: "the CUDA driver failed to initialise (no usable GPU?)")
        }

        @Sendable func allocationProperties(_ device: CUdevice) -> CUmemAllocationProp {
            var prop = CUmemAllocationProp()
            prop.type = Int32(CU_MEM_ALLOCATION_TYPE_PINNED_)
            prop.location = CUmemLocation(type: Int32(CU_MEM_LOCATION_TYPE_DEVICE_), id: device)
            return prop
        }

        return DriverAPI(
            errorName: { code in
                var s: UnsafePointer<CChar>?
                return getErrorName.call(code, &s) == 0 && s != nil ? String(cString: s!) : "CUDA_ERROR_\(code)"
            },
            errorString: { code in
                var s: UnsafePointer<CChar>?
                return getErrorString.call(code, &s) == 0 && s != nil ? String(cString: s!) : "unknown CUDA error"
            },
            driverVersion: { var v: Int32 = 0; let r = driverGetVersion.call(&v); return (r, v) },
            deviceCount: { var n: Int32 = 0; let r = deviceGetCount.call(&n); return (r, n) },
            deviceGet: { ordinal in var d: CUdevice = 0; let r = deviceGet.call(&d, ordinal); return (r, d) },
            deviceName: { device in
                var buffer = [CChar](repeating: 0, count: 256)
                let r = deviceGetName.call(&buffer, 255, device)
                return (r, String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            },
            deviceAttribute: { attribute, device in
                var v: Int32 = 0; let r = deviceGetAttribute.call(&v, attribute, device); return (r, v)
            },
            deviceTotalMemory: { device in var b = 0; let r = deviceTotalMem.call(&b, device); return (r, b) },
            primaryContextRetain: { device in
                var c: CUcontext?; let r = ctxRetain.call(&c, device); return (r, c)
            },
            primaryContextRelease: { device in ctxRelease.call(device) },
            contextSetCurrent: { ctx in ctxSetCurrent.call(ctx) },
            contextSynchronize: { ctxSynchronize.call() },
            streamCreate: { flags in var s: CUstream?; let r = streamCreate.call(&s, flags); return (r, s) },
            streamDestroy: { s in streamDestroy.call(s) },
            streamSynchronize: { s in streamSynchronize.call(s) },
            eventCreate: { flags in var e: CUevent?; let r = eventCreate.call(&e, flags); return (r, e) },
            eventDestroy: { e in eventDestroy.call(e) },
            eventRecord: { e, s in eventRecord.call(e, s) },
            eventSynchronize: { e in eventSynchronize.call(e) },
            eventElapsedTime: { a, b in var ms: Float = 0; let r = eventElapsedTime.call(&ms, a, b); return (r, ms) },
            memGetInfo: { var f = 0, t = 0; let r = memGetInfo.call(&f, &t); return (r, f, t) },
            memAlloc: { bytes in var p: CUdeviceptr = 0; let r = memAlloc.call(&p, bytes); return (r, p) },
            memFree: { p in memFree.call(p) },
            memcpyHtoD: { dst, src, n in memcpyHtoD.call(dst, src, n) },
            memcpyDtoH: { dst, src, n in memcpyDtoH.call(dst, src, n) },
            memsetD8: { dst, v, n in memsetD8.call(dst, v, n) },
            memAddressReserve: { size, alignment in
                var p: CUdeviceptr = 0; let r = addressReserve.call(&p, size, alignment, 0, 0); return (r, p)
            },
            memAddressFree: { p, size in addressFree.call(p, size) },
            memCreate: { size, device in
                var prop = allocationProperties(device)
                var h: CUmemGenericAllocationHandle = 0
                let r = memCreate.call(&h, size, &prop, 0)
                return (r, h)
            },
            memRelease: { h in memRelease.call(h) },
            memMap: { p, size, h in memMap.call(p, size, 0, h, 0) },
            memUnmap: { p, size in memUnmap.call(p, size) },
            memSetAccess: { p, size, device, flags in
                var desc = CUmemAccessDesc(
                    location: CUmemLocation(type: Int32(CU_MEM_LOCATION_TYPE_DEVICE_), id: device),
                    flags: flags)
                return memSetAccess.call(p, size, &desc, 1)
            },
            memGranularity: { device, recommended in
                var prop = allocationProperties(device)
                var g = 0
                let option = recommended ? CU_MEM_ALLOC_GRANULARITY_RECOMMENDED_ : CU_MEM_ALLOC_GRANULARITY_MINIMUM_
                let r = granularity.call(&g, &prop, Int32(option))
                return (r, g)
            },
            moduleLoadData: { image in var m: CUmodule?; let r = moduleLoadData.call(&m, image); return (r, m) },
            moduleUnload: { m in moduleUnload.call(m) },
            moduleGetFunction: { m, name in
                var f: CUfunction?; let r = moduleGetFunction.call(&f, m, name); return (r, f)
            },
            funcSetAttribute: { f, attribute, value in funcSetAttribute.call(f, attribute, value) },
            launchKernel: { f, grid, block, shared, stream, params in
                launchKernel.call(f, grid.0, grid.1, grid.2, block.0, block.1, block.2, shared, stream, params, nil)
            },
            streamBeginCapture: { s, mode in beginCapture.call(s, mode) },
            streamEndCapture: { s in var g: CUgraph?; let r = endCapture.call(s, &g); return (r, g) },
            graphInstantiate: { g, flags in
                var e: CUgraphExec?; let r = graphInstantiate.call(&e, g, flags); return (r, e)
            },
            graphLaunch: { e, s in graphLaunch.call(e, s) },
            graphExecDestroy: { e in graphExecDestroy.call(e) },
            graphDestroy: { g in graphDestroy.call(g) }
        )
    }
}
