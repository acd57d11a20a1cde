import CUDADriver
import Synchronization
import Testing
@testable import VAttention

/// A fake driver that records every call (name and arguments) instead of reaching a GPU. Fake addresses and handles
/// are plausible numbers so the sequence can be asserted exactly.
final class RecordingDriver: Sendable {
    let trace = Mutex<[String]>([])
    private let counter = Atomic<UInt64>(0)
    let granularity = 2 << 20

    func record(_ s: String) { trace.withLock { $0.append(s) } }
    func next() -> UInt64 { counter.add(1, ordering: .relaxed).newValue }
    func calls() -> [String] { trace.withLock { $0 } }
    func clear() { trace.withLock { $0.removeAll() } }

    var api: DriverAPI {
        return DriverAPI(
            errorName: { "CUDA_ERROR_\($0)" }, errorString: { _ in "fake" },
            driverVersion: { (0, 13000) }, deviceCount: { (0, 1) }, deviceGet: { _ in (0, 0) },
            deviceName: { _ in (0, "Fake GPU") }, deviceAttribute: { _, _ in (0, 9) },
            deviceTotalMemory: { _ in (0, 80 << 30) },
            primaryContextRetain: { _ in (0, OpaquePointer(bitPattern: 0x1000)) }, primaryContextRelease: { _ in 0 },
            contextSetCurrent: { _ in self.record("cuCtxSetCurrent"); return 0 },
            contextSynchronize: { self.record("cuCtxSynchronize"); return 0 },
            streamCreate: { _ in (0, OpaquePointer(bitPattern: 0x1000)) }, streamDestroy: { _ in 0 }, streamSynchronize: { _ in 0 },
            eventCreate: { _ in let n = self.next(); self.record("cuEventCreate -> e\(n)"); return (0, OpaquePointer(bitPattern: UInt(n))) },
            eventDestroy: { _ in 0 },
            eventRecord: { e, _ in self.record("cuEventRecord(e\(UInt(bitPattern: e)))"); return 0 },
            eventSynchronize: { e in self.record("cuEventSynchronize(e\(UInt(bitPattern: e)))"); return 0 },
            eventElapsedTime: { _, _ in (0, 0) },
            memGetInfo: { (0, 70 << 30, 80 << 30) }, memAlloc: { _ in (0, 0x7000_0000) }, memFree: { _ in 0 },
            memcpyHtoD: { _, _, _ in 0 }, memcpyDtoH: { _, _, _ in 0 }, memsetD8: { _, _, _ in 0 },
            memAddressReserve: { size, _ in
                let base = self.next() * 0x100_0000_0000
                self.record("cuMemAddressReserve(\(size)) -> va\(base >> 40)")
                return (0, base)
            },
            memAddressFree: { p, _ in self.record("cuMemAddressFree(va\(p >> 40))"); return 0 },
            memCreate: { size, _ in let h = self.next(); self.record("cuMemCreate(\(size)) -> h\(h)"); return (0, h) },
            memRelease: { h in self.record("cuMemRelease(h\(h))"); return 0 },
            memMap: { p, size, h in self.record("cuMemMap(va\(p >> 40)+\(p & 0xff_ffff_ffff), \(size), h\(h))"); return 0 },
            memUnmap: { p, size in self.record("cuMemUnmap(va\(p >> 40)+\(p & 0xff_ffff_ffff), \(size))"); return 0 },
            memSetAccess: { p, size, _, flags in
                self.record("cuMemSetAccess(va\(p >> 40)+\(p & 0xff_ffff_ffff), \(size), \(flags))"); return 0
            },
            memGranularity: { _, _ in (0, self.granularity) },
            moduleLoadData: { _ in (0, OpaquePointer(bitPattern: 0x1000)) }, moduleUnload: { _ in 0 }, moduleGetFunction: { _, _ in (0, OpaquePointer(bitPattern: 0x1000)) },
            funcSetAttribute: { _, _, _ in 0 },
            launchKernel: { f, grid, _, _, s, _ in
                self.record("cuLaunchKernel(f\(UInt(bitPattern: f)), grid \(grid.0), s\(UInt(bitPattern: s)))"); return 0
            },
            streamBeginCapture: { s, mode in
                self.record("cuStreamBeginCapture(s\(UInt(bitPattern: s)), mode \(mode))"); return 0
            },
            streamEndCapture: { s in
                let g = self.next(); self.record("cuStreamEndCapture(s\(UInt(bitPattern: s))) -> g\(g)")
                return (0, OpaquePointer(bitPattern: UInt(g)))
            },
            graphInstantiate: { g, flags in
                let e = self.next(); self.record("cuGraphInstantiateWithFlags(g\(UInt(bitPattern: g)), \(flags)) -> x\(e)")
                return (0, OpaquePointer(bitPattern: UInt(e)))
            },
            graphLaunch: { e, s in self.record("cuGraphLaunch(x\(UInt(bitPattern: e)), s\(UInt(bitPattern: s)))"); return 0 },
            graphExecDestroy: { e in self.record("cuGraphExecDestroy(x\(UInt(bitPattern: e)))"); return 0 },
            graphDestroy: { g in self.record("cuGraphDestroy(g\(UInt(bitPattern: g)))"); return 0 })
    }
}

@Suite("CUDA backend: the exact sequence of driver calls")
struct CUDABackendSequenceTests {
    func makeManager(_ driver: RecordingDriver, background: Bool = false) throws -> KVCacheManager {
        let cuda = CUDA(api: driver.api)
        let device = try CUDADevice(cuda)
        let backend = try CUDAMemoryBackend(device: device, stream: nil)
        // 1 layer, mega layout → 2 tensors (K, V); 2 slots; 2 MB pages hold 1024 tokens of 8 heads × 128 × bf16.
        let spec = KVCacheSpec(layers: 1, kvHeads: 8, headDim: 128, dtype: .bf16, maxSlots: 2, maxContext: 2048,
                               pageSize: 2 << 20, layout: .mega)
        return try KVCacheManager(spec: spec, backend: backend, memoryBudget: 3 * (2 << 20),
                                  policy: MapAheadPolicy(background: background))
    }

    @Test("start-up reserves every tensor, then creates the whole pool; nothing is mapped yet")
    func startUp() throws {
        let driver = RecordingDriver()
        let m = try makeManager(driver)
        let calls = driver.calls().filter { !$0.hasPrefix("cuCtxSetCurrent") }
        #expect(calls == [
            "cuMemAddressReserve(8388608) -> va1",
            "cuMemAddressReserve(8388608) -> va2",
            "cuMemCreate(2097152) -> h3", "cuMemCreate(2097152) -> h4", "cuMemCreate(2097152) -> h5",
        ])
        _ = m
    }

    @Test("a step maps each missing page with cuMemMap then cuMemSetAccess(READWRITE)")
    func stepMaps() throws {
        let driver = RecordingDriver()
        let m = try makeManager(driver)
        driver.clear()
        let s = try m.allocateSlot()
        try m.step([(s, 1)])
        // Slot 0 of K (va1) and V (va2); pages popped from the end of the pool.
        #expect(driver.calls() == [
            "cuMemMap(va1+0, 2097152, h5)", "cuMemSetAccess(va1+0, 2097152, 3)",
            "cuMemMap(va2+0, 2097152, h4)", "cuMemSetAccess(va2+0, 2097152, 3)",
        ])
        driver.clear()
        try m.step([(s, 1024)])
        #expect(driver.calls().isEmpty, "still inside the first page: no driver call")
    }

    @Test("free records a fence on the compute stream and unmaps nothing (deferred reclamation)")
    func freeRecordsFence() throws {
        let driver = RecordingDriver()
        let m = try makeManager(driver)
        let a = try m.allocateSlot()
        try m.step([(a, 100)])
        driver.clear()
        try m.free(a)
        #expect(driver.calls() == ["cuEventCreate -> e6", "cuEventRecord(e6)"])
        #expect(m.stats.mappedPages == 2)
    }

    @Test("reclaiming an idle slot waits on its fence before cuMemUnmap")
    func reclaimWaitsForFence() throws {
        let driver = RecordingDriver()
        let m = try makeManager(driver)
        let a = try m.allocateSlot()
        try m.step([(a, 100)])  // 2 pages mapped (K, V); 1 left in the pool
        try m.free(a)
        let b = try m.allocateSlot(expectedLength: 100)
        #expect(b == a)
        let c = try m.allocateSlot()
        #expect(c != a)
        try m.free(b)  // a/b's slot is idle again: its pages are reclaimable
        driver.clear()
        try m.step([(c, 1)])  // needs 2 pages: 1 from the pool, 1 reclaimed from the idle slot
        let calls = driver.calls()
        let sync = try #require(calls.firstIndex { $0.hasPrefix("cuEventSynchronize") })
        let unmap = try #require(calls.firstIndex { $0.hasPrefix("cuMemUnmap") })
        #expect(sync < unmap, "fence waited before unmapping: \(calls)")
        #expect(calls.filter { $0.hasPrefix("cuMemMap") }.count == 2)
        #expect(m.checkInvariants().isEmpty)
    }

    @Test("shutdown unmaps everything, releases every page and every reservation")
    func shutdownReleasesAll() throws {
        let driver = RecordingDriver()
        let m = try makeManager(driver)
        let a = try m.allocateSlot()
        try m.step([(a, 1000)])
        driver.clear()
        try m.shutdown()
        let calls = driver.calls()
        #expect(calls.filter { $0.hasPrefix("cuMemUnmap") }.count == 2)
        #expect(calls.filter { $0.hasPrefix("cuMemRelease") }.count == 3)
        #expect(calls.suffix(2) == ["cuMemAddressFree(va1)", "cuMemAddressFree(va2)"])
        let lastUnmap = calls.lastIndex { $0.hasPrefix("cuMemUnmap") }!
        let firstRelease = calls.firstIndex { $0.hasPrefix("cuMemRelease") }!
        #expect(lastUnmap < firstRelease)
    }

    @Test("a failing driver call surfaces as CUDAError naming the call, and the pool keeps the page")
    func failingMap() throws {
        let driver = RecordingDriver()
        var api = driver.api
        api.memSetAccess = { _, _, _, _ in 2 }  // CUDA_ERROR_OUT_OF_MEMORY
        let cuda = CUDA(api: api)
        let backend = try CUDAMemoryBackend(device: try CUDADevice(cuda), stream: nil)
        let spec = KVCacheSpec(layers: 1, kvHeads: 8, headDim: 128, dtype: .bf16, maxSlots: 2, maxContext: 2048,
                               pageSize: 2 << 20, layout: .mega)
        let m = try KVCacheManager(spec: spec, backend: backend, memoryBudget: 4 << 20,
                                   policy: MapAheadPolicy(background: false))
        let s = try m.allocateSlot()
        #expect {
            try m.step([(s, 1)])
        } throws: { error in
            guard let e = error as? CUDAError else { return false }
            return e.code == 2 && e.call == "cuMemSetAccess"
        }
        #expect(m.checkInvariants().isEmpty)
        #expect(m.stats.freePages == 2)
    }
}
