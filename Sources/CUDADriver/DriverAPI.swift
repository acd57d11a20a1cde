import CCUDA

/// The table of raw driver calls. Every CUDA driver call in the project goes through one of these closures, so tests can
/// install a table that records the sequence of calls instead of reaching a GPU (swift-system's mocking model).
///
/// Signatures are Swift-shaped (results returned, not written through pointers) so a test table stays short.
public struct DriverAPI: Sendable {
    public typealias Result = CUresult
    public var errorName: @Sendable (_ code: CUresult) -> String
    public var errorString: @Sendable (_ code: CUresult) -> String
    public var driverVersion: @Sendable () -> (CUresult, Int32)
    public var deviceCount: @Sendable () -> (CUresult, Int32)
    public var deviceGet: @Sendable (_ ordinal: Int32) -> (CUresult, CUdevice)
    public var deviceName: @Sendable (_ device: CUdevice) -> (CUresult, String)
    public var deviceAttribute: @Sendable (_ attribute: Int32, _ device: CUdevice) -> (CUresult, Int32)
    public var deviceTotalMemory: @Sendable (_ device: CUdevice) -> (CUresult, Int)
    public var primaryContextRetain: @Sendable (_ device: CUdevice) -> (CUresult, CUcontext?)
    public var primaryContextRelease: @Sendable (_ device: CUdevice) -> CUresult
    public var contextSetCurrent: @Sendable (_ context: CUcontext?) -> CUresult
    public var contextSynchronize: @Sendable () -> CUresult
    public var streamCreate: @Sendable (_ flags: UInt32) -> (CUresult, CUstream?)
    public var streamDestroy: @Sendable (_ stream: CUstream?) -> CUresult
    public var streamSynchronize: @Sendable (_ stream: CUstream?) -> CUresult
    public var eventCreate: @Sendable (_ flags: UInt32) -> (CUresult, CUevent?)
    public var eventDestroy: @Sendable (_ event: CUevent?) -> CUresult
    public var eventRecord: @Sendable (_ event: CUevent?, _ stream: CUstream?) -> CUresult
    public var eventSynchronize: @Sendable (_ event: CUevent?) -> CUresult
    public var eventElapsedTime: @Sendable (_ start: CUevent?, _ end: CUevent?) -> (CUresult, Float)
    public var memGetInfo: @Sendable () -> (CUresult, free: Int, total: Int)
    public var memAlloc: @Sendable (_ bytes: Int) -> (CUresult, CUdeviceptr)
    public var memFree: @Sendable (_ pointer: CUdeviceptr) -> CUresult
    public var memcpyHtoD: @Sendable (_ dst: CUdeviceptr, _ src: UnsafeRawPointer, _ bytes: Int) -> CUresult
    public var memcpyDtoH: @Sendable (_ dst: UnsafeMutableRawPointer, _ src: CUdeviceptr, _ bytes: Int) -> CUresult
    public var memsetD8: @Sendable (_ dst: CUdeviceptr, _ value: UInt8, _ bytes: Int) -> CUresult
    public var memAddressReserve: @Sendable (_ size: Int, _ alignment: Int) -> (CUresult, CUdeviceptr)
    public var memAddressFree: @Sendable (_ pointer: CUdeviceptr, _ size: Int) -> CUresult
    public var memCreate: @Sendable (_ size: Int, _ device: CUdevice) -> (CUresult, CUmemGenericAllocationHandle)
    public var memRelease: @Sendable (_ handle: CUmemGenericAllocationHandle) -> CUresult
    public var memMap: @Sendable (_ pointer: CUdeviceptr, _ size: Int, _ handle: CUmemGenericAllocationHandle) -> CUresult
    public var memUnmap: @Sendable (_ pointer: CUdeviceptr, _ size: Int) -> CUresult
    public var memSetAccess: @Sendable (_ pointer: CUdeviceptr, _ size: Int, _ device: CUdevice, _ flags: Int32) -> CUresult
    public var memGranularity: @Sendable (_ device: CUdevice, _ recommended: Bool) -> (CUresult, Int)
    public var moduleLoadData: @Sendable (_ image: UnsafeRawPointer) -> (CUresult, CUmodule?)
    public var moduleUnload: @Sendable (_ module: CUmodule?) -> CUresult
    public var moduleGetFunction: @Sendable (_ module: CUmodule?, _ name: String) -> (CUresult, CUfunction?)
    /// cuFuncSetAttribute (e.g. raising a kernel's dynamic shared memory limit above 48 KB).
    public var funcSetAttribute: @Sendable (_ function: CUfunction?, _ attribute: Int32, _ value: Int32) -> CUresult
    public var launchKernel: @Sendable (_ function: CUfunction?, _ grid: (UInt32, UInt32, UInt32),
                                        _ block: (UInt32, UInt32, UInt32), _ sharedBytes: UInt32, _ stream: CUstream?,
                                        _ params: UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> CUresult
    // CUDA graphs (stream capture). Tables built without them answer CUDA_ERROR_NOT_SUPPORTED (801).
    /// cuStreamBeginCapture (v2): `mode` is a CUstreamCaptureMode.
    public var streamBeginCapture: @Sendable (_ stream: CUstream?, _ mode: Int32) -> CUresult
    public var streamEndCapture: @Sendable (_ stream: CUstream?) -> (CUresult, CUgraph?)
    /// cuGraphInstantiateWithFlags.
    public var graphInstantiate: @Sendable (_ graph: CUgraph?, _ flags: UInt64) -> (CUresult, CUgraphExec?)
    public var graphLaunch: @Sendable (_ exec: CUgraphExec?, _ stream: CUstream?) -> CUresult
    public var graphExecDestroy: @Sendable (_ exec: CUgraphExec?) -> CUresult
    public var graphDestroy: @Sendable (_ graph: CUgraph?) -> CUresult

    public init(
        errorName: @escaping @Sendable (CUresult) -> String,
        errorString: @escaping @Sendable (CUresult) -> String,
        driverVersion: @escaping @Sendable () -> (CUresult, Int32),
        deviceCount: @escaping @Sendable () -> (CUresult, Int32),
        deviceGet: @escaping @Sendable (Int32) -> (CUresult, CUdevice),
        deviceName: @escaping @Sendable (CUdevice) -> (CUresult, String),
        deviceAttribute: @escaping @Sendable (Int32, CUdevice) -> (CUresult, Int32),
        deviceTotalMemory: @escaping @Sendable (CUdevice) -> (CUresult, Int),
        primaryContextRetain: @escaping @Sendable (CUdevice) -> (CUresult, CUcontext?),
        primaryContextRelease: @escaping @Sendable (CUdevice) -> CUresult,
        contextSetCurrent: @escaping @Sendable (CUcontext?) -> CUresult,
        contextSynchronize: @escaping @Sendable () -> CUresult,
        streamCreate: @escaping @Sendable (UInt32) -> (CUresult, CUstream?),
        streamDestroy: @escaping @Sendable (CUstream?) -> CUresult,
        streamSynchronize: @escaping @Sendable (CUstream?) -> CUresult,
        eventCreate: @escaping @Sendable (UInt32) -> (CUresult, CUevent?),
        eventDestroy: @escaping @Sendable (CUevent?) -> CUresult,
        eventRecord: @escaping @Sendable (CUevent?, CUstream?) -> CUresult,
        eventSynchronize: @escaping @Sendable (CUevent?) -> CUresult,
        eventElapsedTime: @escaping @Sendable (CUevent?, CUevent?) -> (CUresult, Float),
        memGetInfo: @escaping @Sendable () -> (CUresult, free: Int, total: Int),
        memAlloc: @escaping @Sendable (Int) -> (CUresult, CUdeviceptr),
        memFree: @escaping @Sendable (CUdeviceptr) -> CUresult,
        memcpyHtoD: @escaping @Sendable (CUdeviceptr, UnsafeRawPointer, Int) -> CUresult,
        memcpyDtoH: @escaping @Sendable (UnsafeMutableRawPointer, CUdeviceptr, Int) -> CUresult,
        memsetD8: @escaping @Sendable (CUdeviceptr, UInt8, Int) -> CUresult,
        memAddressReserve: @escaping @Sendable (Int, Int) -> (CUresult, CUdeviceptr),
        memAddressFree: @escaping @Sendable (CUdeviceptr, Int) -> CUresult,
        memCreate: @escaping @Sendable (Int, CUdevice) -> (CUresult, CUmemGenericAllocationHandle),
        memRelease: @escaping @Sendable (CUmemGenericAllocationHandle) -> CUresult,
        memMap: @escaping @Sendable (CUdeviceptr, Int, CUmemGenericAllocationHandle) -> CUresult,
        memUnmap: @escaping @Sendable (CUdeviceptr, Int) -> CUresult,
        memSetAccess: @escaping @Sendable (CUdeviceptr, Int, CUdevice, Int32) -> CUresult,
        memGranularity: @escaping @Sendable (CUdevice, Bool) -> (CUresult, Int),
        moduleLoadData: @escaping @Sendable (UnsafeRawPointer) -> (CUresult, CUmodule?),
        moduleUnload: @escaping @Sendable (CUmodule?) -> CUresult,
        moduleGetFunction: @escaping @Sendable (CUmodule?, String) -> (CUresult, CUfunction?),
        funcSetAttribute: @escaping @Sendable (CUfunction?, Int32, Int32) -> CUresult,
        launchKernel: @escaping @Sendable (CUfunction?, (UInt32, UInt32, UInt32), (UInt32, UInt32, UInt32), UInt32,
                                           CUstream?, UnsafeMutablePointer<UnsafeMutableRawPointer?>) -> CUresult,
        streamBeginCapture: @escaping @Sendable (CUstream?, Int32) -> CUresult = { _, _ in 801 },
        streamEndCapture: @escaping @Sendable (CUstream?) -> (CUresult, CUgraph?) = { _ in (801, nil) },
        graphInstantiate: @escaping @Sendable (CUgraph?, UInt64) -> (CUresult, CUgraphExec?) = { _, _ in
            (801, nil)
        },
        graphLaunch: @escaping @Sendable (CUgraphExec?, CUstream?) -> CUresult = { _, _ in 801 },
        graphExecDestroy: @escaping @Sendable (CUgraphExec?) -> CUresult = { _ in 801 },
        graphDestroy: @escaping @Sendable (CUgraph?) -> CUresult = { _ in 801 }
    ) {
        self.errorName = errorName; self.errorString = errorString; self.driverVersion = driverVersion
        self.deviceCount = deviceCount; self.deviceGet = deviceGet; self.deviceName = deviceName
        self.deviceAttribute = deviceAttribute; self.deviceTotalMemory = deviceTotalMemory
        self.primaryContextRetain = primaryContextRetain; self.primaryContextRelease = primaryContextRelease
        self.contextSetCurrent = contextSetCurrent; self.contextSynchronize = contextSynchronize
        self.streamCreate = streamCreate; self.streamDestroy = streamDestroy; self.streamSynchronize = streamSynchronize
        self.eventCreate = eventCreate; self.eventDestroy = eventDestroy; self.eventRecord = eventRecord
        self.eventSynchronize = eventSynchronize; self.eventElapsedTime = eventElapsedTime
        self.memGetInfo = memGetInfo; self.memAlloc = memAlloc; self.memFree = memFree
        self.memcpyHtoD = memcpyHtoD; self.memcpyDtoH = memcpyDtoH; self.memsetD8 = memsetD8
        self.memAddressReserve = memAddressReserve; self.memAddressFree = memAddressFree
        self.memCreate = memCreate; self.memRelease = memRelease; self.memMap = memMap; self.memUnmap = memUnmap
        self.memSetAccess = memSetAccess; self.memGranularity = memGranularity
        self.moduleLoadData = moduleLoadData; self.moduleUnload = moduleUnload
        self.moduleGetFunction = moduleGetFunction; self.funcSetAttribute = funcSetAttribute
        self.launchKernel = launchKernel
        self.streamBeginCapture = streamBeginCapture; self.streamEndCapture = streamEndCapture
        self.graphInstantiate = graphInstantiate; self.graphLaunch = graphLaunch
        self.graphExecDestroy = graphExecDestroy; self.graphDestroy = graphDestroy
    }
}
