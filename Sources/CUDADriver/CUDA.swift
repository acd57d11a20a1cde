import CCUDA
#if canImport(Glibc)
import Glibc
#endif

/// The loaded driver: the call table plus the checked-call helper every wrapper uses.
public final class CUDA: Sendable {
    public let api: DriverAPI

    /// Wraps a call table: `DriverAPI.live()` for the GPU, a recording table in tests.
    public init(api: DriverAPI) { self.api = api }

    /// Loads `libcuda.so.1`; throws `CUDAError.driverNotFound` on a machine without an NVIDIA driver.
    public static func load() throws(CUDAError) -> CUDA { CUDA(api: try DriverAPI.live()) }

    /// Turns a driver result into a typed error naming `call` (swift-system's `valueOrErrno`).
    @inlinable
    public func check(_ result: CUresult, _ call: StaticString) throws(CUDAError) {
        if result != 0 { throw error(result, call) }
    }

    public func error(_ result: CUresult, _ call: StaticString) -> CUDAError {
        CUDAError(code: result, name: api.errorName(result), call: "\(call)", message: api.errorString(result))
    }

    public var driverVersion: Int32 { api.driverVersion().1 }

    public func deviceCount() throws(CUDAError) -> Int {
        let (r, n) = api.deviceCount()
        try check(r, "cuDeviceGetCount")
        return Int(n)
    }
}

/// A GPU and its primary context. Bind the context on every thread that calls the driver (`makeCurrent`).
public final class CUDADevice: @unchecked Sendable {
    public let cuda: CUDA
    public let ordinal: Int32
    public let handle: CUdevice
    /// The primary context (shared with the CUDA runtime and PyTorch in the same process).
    public let context: CUcontext?

    public init(_ cuda: CUDA, ordinal: Int32 = 0) throws(CUDAError) {
        self.cuda = cuda
        self.ordinal = ordinal
        let (r, d) = cuda.api.deviceGet(ordinal)
        try cuda.check(r, "cuDeviceGet")
        handle = d
        let (rc, ctx) = cuda.api.primaryContextRetain(d)
        try cuda.check(rc, "cuDevicePrimaryCtxRetain")
        context = ctx
        try bindCallingThread()
    }

    deinit {
        pthread_key_delete(boundKey)
        _ = cuda.api.primaryContextRelease(handle)
    }

    /// Binds the primary context to the calling thread.
    public func makeCurrent() throws(CUDAError) {
        try cuda.check(cuda.api.contextSetCurrent(context), "cuCtxSetCurrent")
    }

    /// Binds the primary context to the calling thread once: the entry of objects that a thread other than their
    /// creator drives (an engine stepped by a server's own thread). Remembered in thread-local storage, so a thread
    /// that exits takes its mark with it (a new thread is bound even where it reuses an old one's id).
    public func bindCallingThread() throws(CUDAError) {
        if pthread_getspecific(boundKey) != nil { return }
        try makeCurrent()
        pthread_setspecific(boundKey, UnsafeRawPointer(bitPattern: 1))
    }
    private let boundKey: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    public func synchronize() throws(CUDAError) { try cuda.check(cuda.api.contextSynchronize(), "cuCtxSynchronize") }

    public func name() throws(CUDAError) -> String {
        let (r, n) = cuda.api.deviceName(handle)
        try cuda.check(r, "cuDeviceGetName")
        return n
    }

    public func attribute(_ attribute: Int32) throws(CUDAError) -> Int {
        let (r, v) = cuda.api.deviceAttribute(attribute, handle)
        try cuda.check(r, "cuDeviceGetAttribute")
        return Int(v)
    }

    /// `sm_90` for an H100.
    public func architecture() throws(CUDAError) -> String {
        let major = try attribute(Int32(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR_))
        let minor = try attribute(Int32(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR_))
        return "sm_\(major)\(minor)"
    }

    /// The limits kernel launches are planned with, queried from the driver (cuDeviceGetAttribute).
    public func limits() throws(CUDAError) -> CUDADeviceLimits {
        func value(_ attribute: Int32) throws(CUDAError) -> Int { try self.attribute(attribute) }
        return CUDADeviceLimits(
            multiprocessors: try value(Int32(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT_)),
            sharedMemoryPerMultiprocessor: try value(Int32(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR_)),
            sharedMemoryPerBlock: try value(Int32(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_)),
            sharedMemoryPerBlockOptIn: try value(Int32(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN_)),
            reservedSharedMemoryPerBlock: try value(Int32(CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK_)),
            maxBlocksPerMultiprocessor: try value(Int32(CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR_)))
    }

    public func memoryInfo() throws(CUDAError) -> (free: Int, total: Int) {
        let (r, f, t) = cuda.api.memGetInfo()
        try cuda.check(r, "cuMemGetInfo")
        return (f, t)
    }

    /// The VMM page size for device memory (2 MB on Hopper).
    public func allocationGranularity(recommended: Bool = false) throws(CUDAError) -> Int {
        let (r, g) = cuda.api.memGranularity(handle, recommended)
        try cuda.check(r, "cuMemGetAllocationGranularity")
        return g
    }
}

/// What launch planning needs to know about a device: grid sizes, how many blocks fit an SM's shared memory, the
/// largest block. Query a device's with `CUDADevice.limits()`; planning code (`DecodeShape`, the kernels' grids)
/// takes them explicitly, so no one device's numbers are built in, and a test states the device it plans for.
public struct CUDADeviceLimits: Sendable, Hashable {
    /// Streaming multiprocessors (CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).
    public var multiprocessors: Int
    /// Shared memory of one SM, bytes (…_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR): what resident blocks share.
    public var sharedMemoryPerMultiprocessor: Int
    /// Shared memory a block may use without opting in, bytes (…_MAX_SHARED_MEMORY_PER_BLOCK).
    public var sharedMemoryPerBlock: Int
    /// Shared memory a block may use once the kernel opts in (`CUDAFunction.setMaxDynamicSharedMemory`), bytes
    /// (…_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN).
    public var sharedMemoryPerBlockOptIn: Int
    /// Shared memory the driver reserves per resident block, bytes (…_RESERVED_SHARED_MEMORY_PER_BLOCK).
    public var reservedSharedMemoryPerBlock: Int
    /// Most blocks resident on one SM (…_MAX_BLOCKS_PER_MULTIPROCESSOR).
    public var maxBlocksPerMultiprocessor: Int

    public init(multiprocessors: Int, sharedMemoryPerMultiprocessor: Int, sharedMemoryPerBlock: Int,
                sharedMemoryPerBlockOptIn: Int, reservedSharedMemoryPerBlock: Int, maxBlocksPerMultiprocessor: Int) {
        self.multiprocessors = multiprocessors
        self.sharedMemoryPerMultiprocessor = sharedMemoryPerMultiprocessor
        self.sharedMemoryPerBlock = sharedMemoryPerBlock
        self.sharedMemoryPerBlockOptIn = sharedMemoryPerBlockOptIn
        self.reservedSharedMemoryPerBlock = reservedSharedMemoryPerBlock
        self.maxBlocksPerMultiprocessor = maxBlocksPerMultiprocessor
    }

    /// Blocks of `sharedBytes` dynamic shared memory each that fit one SM's shared memory (at most
    /// `maxBlocksPerMultiprocessor`).
    public func residentBlocks(sharedBytes: Int) -> Int {
        min(maxBlocksPerMultiprocessor, sharedMemoryPerMultiprocessor / (sharedBytes + reservedSharedMemoryPerBlock))
    }
}

/// A non-blocking stream.
public final class CUDAStream: @unchecked Sendable {
    public let cuda: CUDA
    public let handle: CUstream?

    public init(_ cuda: CUDA) throws(CUDAError) {
        self.cuda = cuda
        let (r, s) = cuda.api.streamCreate(UInt32(CU_STREAM_NON_BLOCKING_))
        try cuda.check(r, "cuStreamCreate")
        handle = s
    }

    deinit { _ = cuda.api.streamDestroy(handle) }

    public func synchronize() throws(CUDAError) {
        try cuda.check(cuda.api.streamSynchronize(handle), "cuStreamSynchronize")
    }
}

/// An event; `timing: false` makes record/synchronize cheapest (fences).
public final class CUDAEvent: @unchecked Sendable {
    public let cuda: CUDA
    public let handle: CUevent?

    public init(_ cuda: CUDA, timing: Bool = false) throws(CUDAError) {
        self.cuda = cuda
        let (r, e) = cuda.api.eventCreate(timing ? 0 : UInt32(CU_EVENT_DISABLE_TIMING_))
        try cuda.check(r, "cuEventCreate")
        handle = e
    }

    deinit { _ = cuda.api.eventDestroy(handle) }

    public func record(on stream: CUDAStream?) throws(CUDAError) {
        try cuda.check(cuda.api.eventRecord(handle, stream?.handle), "cuEventRecord")
    }

    /// Blocks the calling thread until all work captured by the last `record` has finished.
    public func synchronize() throws(CUDAError) {
        try cuda.check(cuda.api.eventSynchronize(handle), "cuEventSynchronize")
    }

    /// Milliseconds between `start` and this event (both recorded with `timing: true`).
    public func milliseconds(since start: CUDAEvent) throws(CUDAError) -> Float {
        let (r, ms) = cuda.api.eventElapsedTime(start.handle, handle)
        try cuda.check(r, "cuEventElapsedTime")
        return ms
    }
}

/// A plain device allocation (cuMemAlloc): for kernel arguments, test data, anything not in the KV cache.
public final class DeviceBuffer: @unchecked Sendable {
    public let cuda: CUDA
    public let address: CUdeviceptr
    public let byteCount: Int

    public init(_ cuda: CUDA, byteCount: Int) throws(CUDAError) {
        self.cuda = cuda
        self.byteCount = byteCount
        let (r, p) = cuda.api.memAlloc(max(byteCount, 1))
        try cuda.check(r, "cuMemAlloc")
        address = p
    }

    deinit { _ = cuda.api.memFree(address) }

    public func upload<T>(_ values: [T]) throws(CUDAError) {
        precondition(values.count * MemoryLayout<T>.stride <= byteCount, "upload larger than the buffer")
        let r = values.withUnsafeBytes { cuda.api.memcpyHtoD(address, $0.baseAddress!, $0.count) }
        try cuda.check(r, "cuMemcpyHtoD")
    }

    public func download<T>(_ type: T.Type, count: Int) throws(CUDAError) -> [T] {
        precondition(count * MemoryLayout<T>.stride <= byteCount, "download larger than the buffer")
        var out = [T](unsafeUninitializedCapacity: count) { _, n in n = count }
        let r = out.withUnsafeMutableBytes { cuda.api.memcpyDtoH($0.baseAddress!, address, $0.count) }
        try cuda.check(r, "cuMemcpyDtoH")
        return out
    }
}
