import CCUDA
import CUDADriver
import Synchronization
import Support
import VAttention
#if canImport(Glibc)
import Glibc
#endif

/// A driver table for tests: it records every call (name and arguments) instead of reaching a GPU, and keeps the
/// driver's threading rule — a call that needs a context, made from a thread with no current context, fails with
/// CUDA_ERROR_INVALID_CONTEXT (201) as the real driver does (recorded as `"cuX -> 201"`). Each thread's current
/// context is thread-local, as in the driver. Fake addresses and handles are plausible numbers so the sequence can be
/// asserted exactly; `inject(_:_:)` makes one entry point fail with a code from then on.
public final class RecordingDriver: Sendable {
    private let trace = Locked<[String]>([])
    private let failures = Locked<[String: CUresult]>([:])
    private let delays = Locked<[String: Duration]>([:])
    private let counter = Atomic<UInt64>(0)
    public let granularity = 2 << 20
    /// The primary context's handle.
    public static var context: CUcontext? { OpaquePointer(bitPattern: 0x1000) }
    private let currentKey: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0)
        return key
    }()

    /// The fake device's attributes (cuDeviceGetAttribute): compute capability 9.0 and small round limits unlike
    /// any real GPU's, so nothing passes by matching a real device by accident. Other attributes answer
    /// CUDA_ERROR_INVALID_VALUE: a new query needs an entry here.
    public static let deviceAttributes: [Int32: Int32] = [
        Int32(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR_): 9,
        Int32(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR_): 0,
        Int32(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT_): 4,
        Int32(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR_): 100 << 10,
        Int32(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_): 48 << 10,
        Int32(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN_): 99 << 10,
        Int32(CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK_): 1 << 10,
        Int32(CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR_): 16,
    ]

    public init() {}
    deinit { pthread_key_delete(currentKey) }

    public func record(_ s: String) { trace.withLock { $0.append(s) } }
    public func next() -> UInt64 { counter.add(1, ordering: .relaxed).newValue }
    public func calls() -> [String] { trace.withLock { $0 } }
    public func clear() { trace.withLock { $0.removeAll() } }
    /// Every later call of `call` (a driver name, e.g. "cuMemcpyHtoD") fails with `code` (0 to heal it).
    public func inject(_ call: String, _ code: Int32) { failures.withLock { $0[call] = code == 0 ? nil : code } }

    /// Every later call of `call` takes `delay` first (a slow device).
    public func slowDown(_ call: String, by delay: Duration) { delays.withLock { $0[call] = delay } }

    /// Whether the calling thread has a current context.
    public var callingThreadIsBound: Bool { pthread_getspecific(currentKey) != nil }

    /// The result of `call` before it runs: 201 without a current context, an injected failure, or 0.
    private func admit(_ call: String) -> CUresult {
        if !callingThreadIsBound {
            record("\(call) -> 201")
            return CUresult(CUDAError.invalidContext)
        }
        if let delay = delays.withLock({ $0[call] }) {
            let (seconds, atto) = delay.components
            usleep(UInt32(seconds * 1_000_000 + atto / 1_000_000_000_000))
        }
        if let code = failures.withLock({ $0[call] }) {
            record("\(call) -> \(code)")
            return code
        }
        return 0
    }

    private func gated(_ call: String, _ body: () -> CUresult) -> CUresult {
        let r = admit(call)
        return r != 0 ? r : body()
    }

    private func gated<T>(_ call: String, _ failed: T, _ body: () -> (CUresult, T)) -> (CUresult, T) {
        let r = admit(call)
        return r != 0 ? (r, failed) : body()
    }

    public var api: DriverAPI {
        DriverAPI(
            errorName: { $0 == 201 ? "CUDA_ERROR_INVALID_CONTEXT" : "CUDA_ERROR_\($0)" },
            errorString: { $0 == 201 ? "invalid device context" : "fake" },
            driverVersion: { (0, 13000) }, deviceCount: { (0, 1) }, deviceGet: { _ in (0, 0) },
            deviceName: { _ in (0, "Fake GPU") }, deviceAttribute: { attribute, _ in
                RecordingDriver.deviceAttributes[attribute].map { (0, $0) } ?? (CUresult(CUDAError.invalidValue), 0)
            },
            deviceTotalMemory: { _ in (0, 80 << 30) },
            primaryContextRetain: { _ in (0, RecordingDriver.context) }, primaryContextRelease: { _ in 0 },
            contextSetCurrent: { ctx in
                self.record("cuCtxSetCurrent")
                pthread_setspecific(self.currentKey, ctx.map { UnsafeRawPointer($0) })
                return 0
            },
            contextSynchronize: { self.gated("cuCtxSynchronize") { self.record("cuCtxSynchronize"); return 0 } },
            streamCreate: { _ in self.gated("cuStreamCreate", nil) { (0, OpaquePointer(bitPattern: 0x1000)) } },
            streamDestroy: { _ in 0 },
            streamSynchronize: { _ in self.gated("cuStreamSynchronize") { 0 } },
            eventCreate: { _ in
                self.gated("cuEventCreate", nil) {
                    let n = self.next(); self.record("cuEventCreate -> e\(n)")
                    return (0, OpaquePointer(bitPattern: UInt(n)))
                }
            },
            eventDestroy: { _ in 0 },
            eventRecord: { e, _ in
                self.gated("cuEventRecord") { self.record("cuEventRecord(e\(UInt(bitPattern: e)))"); return 0 }
            },
            eventSynchronize: { e in
                self.gated("cuEventSynchronize") { self.record("cuEventSynchronize(e\(UInt(bitPattern: e)))"); return 0 }
            },
            eventElapsedTime: { _, _ in self.gated("cuEventElapsedTime", 0) { (0, 0) } },
            memGetInfo: {
                let r = self.admit("cuMemGetInfo")
                return r != 0 ? (r, 0, 0) : (0, 70 << 30, 80 << 30)
            },
            memAlloc: { bytes in
                self.gated("cuMemAlloc", 0) { let n = self.next(); return (0, 0x7000_0000 + CUdeviceptr(n) << 32) }
            },
            memFree: { _ in 0 },
            memcpyHtoD: { _, _, bytes in
                self.gated("cuMemcpyHtoD") { self.record("cuMemcpyHtoD(\(bytes))"); return 0 }
            },
            memcpyDtoH: { dst, _, bytes in
                self.gated("cuMemcpyDtoH") {
                    memset(dst, 0, bytes)
                    self.record("cuMemcpyDtoH(\(bytes))"); return 0
                }
            },
            memsetD8: { _, _, _ in self.gated("cuMemsetD8") { 0 } },
            memAddressReserve: { size, _ in
                self.gated("cuMemAddressReserve", 0) {
                    let base = self.next() * 0x100_0000_0000
                    self.record("cuMemAddressReserve(\(size)) -> va\(base >> 40)")
                    return (0, base)
                }
            },
            memAddressFree: { p, _ in self.record("cuMemAddressFree(va\(p >> 40))"); return 0 },
            memCreate: { size, _ in
                self.gated("cuMemCreate", 0) {
                    let h = self.next(); self.record("cuMemCreate(\(size)) -> h\(h)"); return (0, h)
                }
            },
            memRelease: { h in self.record("cuMemRelease(h\(h))"); return 0 },
            memMap: { p, size, h in
                self.gated("cuMemMap") {
                    self.record("cuMemMap(va\(p >> 40)+\(p & 0xff_ffff_ffff), \(size), h\(h))"); return 0
                }
            },
            memUnmap: { p, size in
                self.gated("cuMemUnmap") { self.record("cuMemUnmap(va\(p >> 40)+\(p & 0xff_ffff_ffff), \(size))"); return 0 }
            },
            memSetAccess: { p, size, _, flags in
                self.gated("cuMemSetAccess") {
                    self.record("cuMemSetAccess(va\(p >> 40)+\(p & 0xff_ffff_ffff), \(size), \(flags))"); return 0
                }
            },
            memGranularity: { _, _ in (0, self.granularity) },
            moduleLoadData: { _ in self.gated("cuModuleLoadData", nil) { (0, OpaquePointer(bitPattern: 0x1000)) } },
            moduleUnload: { _ in 0 },
            moduleGetFunction: { _, _ in self.gated("cuModuleGetFunction", nil) { (0, OpaquePointer(bitPattern: 0x1000)) } },
            funcSetAttribute: { _, _, _ in self.gated("cuFuncSetAttribute") { 0 } },
            launchKernel: { f, grid, _, _, s, _ in
                self.gated("cuLaunchKernel") {
                    self.record("cuLaunchKernel(f\(UInt(bitPattern: f)), grid \(grid.0), s\(UInt(bitPattern: s)))")
                    return 0
                }
            },
            streamBeginCapture: { s, mode in
                self.gated("cuStreamBeginCapture") {
                    self.record("cuStreamBeginCapture(s\(UInt(bitPattern: s)), mode \(mode))"); return 0
                }
            },
            streamEndCapture: { s in
                self.gated("cuStreamEndCapture", nil) {
                    let g = self.next(); self.record("cuStreamEndCapture(s\(UInt(bitPattern: s))) -> g\(g)")
                    return (0, OpaquePointer(bitPattern: UInt(g)))
                }
            },
            graphInstantiate: { g, flags in
                self.gated("cuGraphInstantiateWithFlags", nil) {
                    let e = self.next()
                    self.record("cuGraphInstantiateWithFlags(g\(UInt(bitPattern: g)), \(flags)) -> x\(e)")
                    return (0, OpaquePointer(bitPattern: UInt(e)))
                }
            },
            graphLaunch: { e, s in
                self.gated("cuGraphLaunch") {
                    self.record("cuGraphLaunch(x\(UInt(bitPattern: e)), s\(UInt(bitPattern: s)))"); return 0
                }
            },
            graphExecDestroy: { e in self.record("cuGraphExecDestroy(x\(UInt(bitPattern: e)))"); return 0 },
            graphDestroy: { g in self.record("cuGraphDestroy(g\(UInt(bitPattern: g)))"); return 0 })
    }
}
