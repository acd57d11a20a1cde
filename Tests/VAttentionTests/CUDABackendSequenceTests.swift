import CUDADriver
import CUDADriverTesting
import Synchronization
import Testing
@testable import VAttention

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
