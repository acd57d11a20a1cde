import CKernelParams
import CUDADriver
import CUDADriverTesting
import Testing

/// CUDA graphs through the recording driver: the exact order of capture, launch, instantiate, replay and destroy.
@Suite("CUDA graphs: the exact sequence of driver calls")
struct CUDAGraphSequenceTests {
    struct Planted: Error {}

    func setUp(_ driver: RecordingDriver, api: DriverAPI? = nil) throws -> (CUDAStream, CUDAKernel<GraphStepParams>) {
        let cuda = CUDA(api: api ?? driver.api)
        _ = try CUDADevice(cuda)  // binds the context to this thread, as every driving thread must
        let stream = try CUDAStream(cuda)
        let module = try CUDAModule(cuda, image: [0])
        let function = try module.kernel("k", GraphStepParams.self)
        driver.clear()
        return (stream, function)
    }

    @Test("capture: begin → the body's launches → end → instantiate → graph destroyed; replays; exec destroyed last")
    func captureAndReplay() throws {
        let driver = RecordingDriver()
        let (stream, f) = try setUp(driver)
        do {
            let exec = try stream.capture {
                for g in 1...3 { try f.launch(grid: (UInt32(g), 1, 1), block: (32, 1, 1), stream: stream, GraphStepParams(x: 0, n: 7, a: 1, b: 0)) }
            }
            #expect(driver.calls() == [
                "cuStreamBeginCapture(s4096, mode 1)",
                "cuLaunchKernel(f4096, grid 1, s4096)", "cuLaunchKernel(f4096, grid 2, s4096)",
                "cuLaunchKernel(f4096, grid 3, s4096)",
                "cuStreamEndCapture(s4096) -> g1",
                "cuGraphInstantiateWithFlags(g1, 0) -> x2",
                "cuGraphDestroy(g1)",
            ])
            driver.clear()
            try exec.launch(on: stream)
            try exec.launch(on: stream)
            #expect(driver.calls() == ["cuGraphLaunch(x2, s4096)", "cuGraphLaunch(x2, s4096)"])
            driver.clear()
        }
        #expect(driver.calls() == ["cuGraphExecDestroy(x2)"], "the exec is destroyed when released, not before")
    }

    @Test("captureGraph keeps the graph until it is released; the mode and flags are passed through")
    func graphLifetime() throws {
        let driver = RecordingDriver()
        let (stream, f) = try setUp(driver)
        do {
            let graph = try stream.captureGraph(mode: .global) {
                try f.launch(grid: (4, 1, 1), block: (32, 1, 1), stream: stream, GraphStepParams(x: 0, n: 0, a: 1, b: 0))
            }
            let a = try graph.instantiate(flags: 1)
            let b = try graph.instantiate()
            #expect(driver.calls() == [
                "cuStreamBeginCapture(s4096, mode 0)", "cuLaunchKernel(f4096, grid 4, s4096)",
                "cuStreamEndCapture(s4096) -> g1",
                "cuGraphInstantiateWithFlags(g1, 1) -> x2", "cuGraphInstantiateWithFlags(g1, 0) -> x3",
            ])
            driver.clear()
            withExtendedLifetime((graph, a, b)) {}
        }
        let calls = driver.calls()
        #expect(calls.count == 3 && Set(calls) == ["cuGraphDestroy(g1)", "cuGraphExecDestroy(x2)", "cuGraphExecDestroy(x3)"])
    }

    @Test("a throwing body ends the capture and destroys the partial graph; nothing is instantiated")
    func throwingBody() throws {
        let driver = RecordingDriver()
        let (stream, f) = try setUp(driver)
        #expect(throws: Planted.self) {
            _ = try stream.capture {
                try f.launch(grid: (1, 1, 1), block: (32, 1, 1), stream: stream, GraphStepParams(x: 0, n: 0, a: 1, b: 0))
                throw Planted()
            }
        }
        #expect(driver.calls() == [
            "cuStreamBeginCapture(s4096, mode 1)", "cuLaunchKernel(f4096, grid 1, s4096)",
            "cuStreamEndCapture(s4096) -> g1", "cuGraphDestroy(g1)",
        ])
    }

    @Test("a failing end of capture (invalidated) surfaces as CUDAError naming cuStreamEndCapture")
    func invalidatedCapture() throws {
        let driver = RecordingDriver()
        var api = driver.api
        api.streamEndCapture = { _ in driver.record("cuStreamEndCapture -> invalidated"); return (901, nil) }
        let (stream, _) = try setUp(driver, api: api)
        #expect {
            _ = try stream.capture {}
        } throws: { error in
            guard let e = error as? CUDAError else { return false }
            return e.code == 901 && e.call == "cuStreamEndCapture"
        }
        #expect(driver.calls() == ["cuStreamBeginCapture(s4096, mode 1)", "cuStreamEndCapture -> invalidated"])
    }

    @Test("a table built without graph entries answers CUDA_ERROR_NOT_SUPPORTED at the first graph call")
    func tableWithoutGraphs() throws {
        let driver = RecordingDriver()
        let full = driver.api
        let bare = DriverAPI(
            errorName: full.errorName, errorString: full.errorString, driverVersion: full.driverVersion,
            deviceCount: full.deviceCount, deviceGet: full.deviceGet, deviceName: full.deviceName,
            deviceAttribute: full.deviceAttribute, deviceTotalMemory: full.deviceTotalMemory,
            primaryContextRetain: full.primaryContextRetain, primaryContextRelease: full.primaryContextRelease,
            contextSetCurrent: full.contextSetCurrent, contextSynchronize: full.contextSynchronize,
            streamCreate: full.streamCreate, streamDestroy: full.streamDestroy,
            streamSynchronize: full.streamSynchronize, eventCreate: full.eventCreate,
            eventDestroy: full.eventDestroy, eventRecord: full.eventRecord, eventSynchronize: full.eventSynchronize,
            eventElapsedTime: full.eventElapsedTime, memGetInfo: full.memGetInfo, memAlloc: full.memAlloc,
            memFree: full.memFree, memcpyHtoD: full.memcpyHtoD, memcpyDtoH: full.memcpyDtoH,
            memsetD8: full.memsetD8, memAddressReserve: full.memAddressReserve, memAddressFree: full.memAddressFree,
            memCreate: full.memCreate, memRelease: full.memRelease, memMap: full.memMap, memUnmap: full.memUnmap,
            memSetAccess: full.memSetAccess, memGranularity: full.memGranularity,
            moduleLoadData: full.moduleLoadData, moduleUnload: full.moduleUnload,
            moduleGetFunction: full.moduleGetFunction, funcSetAttribute: full.funcSetAttribute,
            launchKernel: full.launchKernel)
        let (stream, _) = try setUp(driver, api: bare)
        #expect {
            _ = try stream.capture {}
        } throws: { error in
            guard let e = error as? CUDAError else { return false }
            return e.code == 801 && e.call == "cuStreamBeginCapture"
        }
    }
}
