import CUDADriver
import CUDADriverTesting
import Engine
import Foundation
import Hummingbird
import HummingbirdTesting
import Model
import Server
import Support
import VAttention
import Testing
import VAttention

/// A model that drives the device each step as the CUDA model does — the step's tokens up, sampled ids back — on
/// the recording driver table, which keeps the driver's rule that a thread with no current context gets 201. It
/// "samples" token 7 for every chunk that wants one. `binds: false` is a runner that forgets to bind its context.
final class DeviceRunner: ModelRunner, @unchecked Sendable {
    let device: CUDADevice
    let binds: Bool
    let scratch: DeviceBuffer
    let hyperparameters = DummyWeights.knownShape("smollm2-135m")!
    var deviceDescription: String { "cuda: recording driver" }
    var kvLocation: MemoryLocation { .device }

    init(device: CUDADevice, binds: Bool = true) throws {
        self.device = device
        self.binds = binds
        scratch = try DeviceBuffer(device.cuda, byteCount: 1 << 16)
    }

    func bindCallingThread() throws { if binds { try device.bindCallingThread() } }

    func run(_ chunks: [SequenceChunk], kv: any KVStore, sampling: [TokenDraw]) throws -> [TokenID] {
        try scratch.upload(chunks.flatMap(\.tokens))
        return try scratch.download(Int32.self, count: sampling.count).map { 7 + $0 }
    }
}

/// An engine service over `DeviceRunner` and a vAttention KV store on the recording driver (mega layout, 2 MB pages,
/// the background mapper on), with routes that take token-id prompts (no tokenizer, like a dummy-weight model).
struct DeviceHarness {
    let driver = RecordingDriver()
    let service: EngineService
    let routes: OpenAIRoutes
    let metrics = ServerMetrics()

    init(binds: Bool = true) throws {
        let device = try CUDADevice(CUDA(api: driver.api))  // binds the test's thread, as a real start-up does
        let runner = try DeviceRunner(device: device, binds: binds)
        let hp = runner.hyperparameters
        let backend = try CUDAMemoryBackend(device: device, stream: nil)
        let spec = KVCacheSpec(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, dtype: .bf16,
                               maxSlots: 2, maxContext: 256, pageSize: backend.granularity, layout: .mega)
        let kv = VAttentionKVStore(manager: try KVCacheManager(spec: spec, backend: backend, memoryBudget: 16 << 20))
        let engine = LLMEngine(model: runner, tokenizer: nil, kv: kv,
                               configuration: EngineConfiguration(tokenBudget: 64, maxRunning: 2))
        service = EngineService(engine: engine, metrics: metrics)
        routes = OpenAIRoutes(service: service, metrics: metrics,
                              configuration: ServerConfiguration(modelName: "dummy", chatTemplate: nil))
    }

    static let greedy3 = SamplingParameters(temperature: 0, maxTokens: 3, ignoreEOS: true)

    func contextErrors() -> [String] { driver.calls().filter { $0.hasSuffix("-> 201") } }
}

/// Drains a generation: its tokens, finish reason, and the failure it ended with (if any).
func drain(_ g: Generation) async -> (tokens: [TokenID], finish: FinishReason?, failure: GenerationFailure?) {
    var tokens: [TokenID] = []
    var finish: FinishReason?
    do {
        for try await e in g.events {
            tokens += e.tokens
            if let f = e.finished { finish = f }
        }
    } catch {
        return (tokens, finish, error as? GenerationFailure)
    }
    return (tokens, finish, nil)
}

@Suite("The engine on a device: thread binding, faults reaching clients, a dead engine", .serialized)
struct DeviceFaultTests {
    @Test("the recording driver keeps the rule: a thread that never bound the context gets 201")
    func driverRule() throws {
        let driver = RecordingDriver()
        let cuda = CUDA(api: driver.api)
        let result = Locked<Int32>(0)
        try onNewThread { result.withLock { $0 = cuda.api.memcpyHtoD(0, [1], 1) } }
        #expect(result.withLock { $0 } == 201)
        _ = try CUDADevice(cuda)  // binds this thread
        #expect(cuda.api.memcpyHtoD(0, [1], 1) == 0)
        try onNewThread { result.withLock { $0 = cuda.api.memcpyHtoD(0, [1], 1) } }
        #expect(result.withLock { $0 } == 201, "binding is per thread: another thread is still unbound")
    }

    @Test("an EngineService's own thread binds the context before it steps: a request is served, no call gets 201")
    func engineThreadBinds() async throws {
        let h = try DeviceHarness()
        try await withEngine(h.service) {
            let r = await drain(try h.service.submit(prompt: [1, 2, 3, 4], parameters: DeviceHarness.greedy3))
            #expect(r.failure == nil)
            #expect(r.tokens == [7, 7, 7] && r.finish == .length)
            let second = await drain(try h.service.submit(prompt: [5, 6], parameters: DeviceHarness.greedy3))
            #expect(second.tokens.count == 3 && second.finish == .length)
        }
        #expect(h.contextErrors().isEmpty, "\(h.contextErrors())")
        #expect(h.driver.calls().contains { $0.hasPrefix("cuMemMap") }, "the KV store mapped pages on the device")
    }

    @Test("HTTP on a model without a tokenizer: token-id prompts are served, one chunk per token; text is refused")
    func tokenIdPrompts() async throws {
        let h = try DeviceHarness()
        try await withEngine(h.service) {
            try await Application(router: makeRouter(h.routes)).test(.router) { client in
                let r = try await client.post("/v1/completions",
                                              #"{"model": "dummy", "prompt": [1, 2, 3], "max_tokens": 4, "ignore_eos": true}"#)
                #expect(r.status == .ok)
                let usage = try json(r.body)["usage"] as? [String: Int]
                #expect(usage?["completion_tokens"] == 4)
                let s = try await client.post("/v1/completions",
                    #"{"model": "dummy", "prompt": [1, 2, 3], "max_tokens": 5, "stream": true, "ignore_eos": true}"#)
                let (events, done) = try sseEvents(String(buffer: s.body))
                #expect(done && events.count == 5, "one chunk per generated token: \(events)")
                let text = try await client.post("/v1/completions", #"{"model": "dummy", "prompt": "Hi"}"#)
                #expect(text.status == .badRequest)
                #expect((try json(text.body)["error"] as? [String: Any])?["code"] as? String == "no_tokenizer")
            }
        }
    }

    @Test("a runner that never binds: the step fails with 201, the request ends with that error, the engine is dead")
    func unboundEngineDies() async throws {
        let h = try DeviceHarness(binds: false)
        let task = Task { try await h.service.run() }
        let r = await drain(try h.service.submit(prompt: [1, 2, 3], parameters: DeviceHarness.greedy3))
        let failure = try #require(r.failure)
        #expect(failure.kind == .engineFault)
        #expect(failure.message.contains("CUDA_ERROR_INVALID_CONTEXT"), "\(failure.message)")
        #expect(h.service.deathReason != nil)
        #expect(throws: EngineDead.self) { _ = try h.service.submit(prompt: [1], parameters: DeviceHarness.greedy3) }
        await #expect(throws: EngineDead.self) { try await task.value }
        #expect(!h.contextErrors().isEmpty)
    }

    @Test("a fault the device survives ends only the requests in flight; the engine serves the next one")
    func recoverableFault() async throws {
        let h = try DeviceHarness()
        try await withEngine(h.service) {
            h.driver.inject("cuMemcpyHtoD", CUDAError.outOfMemory)
            let failed = await drain(try h.service.submit(prompt: [1, 2, 3], parameters: DeviceHarness.greedy3))
            #expect(failed.failure?.kind == .engineFault)
            #expect(failed.failure?.message.contains("cuMemcpyHtoD") == true)
            h.driver.inject("cuMemcpyHtoD", 0)
            let served = await drain(try h.service.submit(prompt: [1, 2, 3], parameters: DeviceHarness.greedy3))
            #expect(served.failure == nil && served.tokens.count == 3)
            #expect(h.service.deathReason == nil)
            let metrics = h.metrics.render()
            #expect(metrics.contains("vattn_engine_step_failures_total 1"), "\(metrics)")
            #expect(metrics.contains("vattn_requests_failed_total 1"), "\(metrics)")
        }
    }

    @Test("three failed steps in a row mark the engine dead")
    func repeatedFaults() async throws {
        let h = try DeviceHarness()
        let task = Task { try await h.service.run() }
        h.driver.inject("cuMemcpyHtoD", CUDAError.outOfMemory)
        for _ in 0..<EngineService.failuresBeforeDead {
            let r = await drain(try h.service.submit(prompt: [1, 2], parameters: DeviceHarness.greedy3))
            #expect(r.failure?.kind == .engineFault)
        }
        #expect(h.service.deathReason != nil)
        await #expect(throws: EngineDead.self) { try await task.value }
    }

    @Test("over HTTP a fault is a 500 JSON error, a streamed fault an SSE error event with no [DONE]; dead: /health 503")
    func faultsOverHTTP() async throws {
        let h = try DeviceHarness()
        let task = Task { try await h.service.run() }
        try await Application(router: makeRouter(h.routes)).test(.router) { client in
            h.driver.inject("cuMemcpyHtoD", CUDAError.outOfMemory)
            let body = #"{"model": "dummy", "prompt": [1, 2, 3], "max_tokens": 4"#
            let plain = try await client.post("/v1/completions", body + "}")
            #expect(plain.status == .internalServerError)
            let error = try json(plain.body)["error"] as? [String: Any]
            #expect(error?["type"] as? String == "server_error" && error?["code"] as? String == "engine_error")
            #expect((error?["message"] as? String)?.contains("cuMemcpyHtoD") == true)

            let streamed = try await client.post("/v1/completions", body + #", "stream": true}"#)
            #expect(streamed.status == .ok)
            let (events, done) = try sseEvents(String(buffer: streamed.body))
            #expect(!done, "a failed stream never ends with [DONE]")
            #expect((events.last?["error"] as? [String: Any])?["code"] as? String == "engine_error")

            // The third failure in a row: dead.
            h.driver.inject("cuMemcpyHtoD", CUDAError.illegalAddress)
            _ = try await client.post("/v1/completions", body + "}")
            let health = try await client.execute(uri: "/health", method: .get)
            #expect(health.status == .serviceUnavailable)
            #expect(try json(health.body)["status"] as? String == "dead")
            let refused = try await client.post("/v1/completions", body + "}")
            #expect(refused.status == .serviceUnavailable)
            #expect((try json(refused.body)["error"] as? [String: Any])?["code"] as? String == "engine_dead")
        }
        await #expect(throws: EngineDead.self) { try await task.value }
    }

    @Test("shutdown with a drain limit ends the requests still running with a shutting-down error, then stops")
    func drainLimit() async throws {
        let h = try DeviceHarness()
        let task = Task { try await h.service.run() }
        let long = SamplingParameters(temperature: 0, maxTokens: 250, ignoreEOS: true)
        // A slow device: each step waits, so the request is still running when the limit passes.
        h.driver.slowDown("cuMemcpyDtoH", by: .milliseconds(20))
        let g = try h.service.submit(prompt: [1, 2, 3], parameters: long)
        try await waitFor { h.service.snapshot.running == 1 }
        let started = ContinuousClock.now
        #expect(h.service.beginShutdown(drainLimit: .milliseconds(200)) == 1)
        #expect(throws: ShuttingDown.self) { _ = try h.service.submit(prompt: [1], parameters: DeviceHarness.greedy3) }
        let r = await drain(g)
        #expect(r.failure?.kind == .shuttingDown)
        #expect(r.tokens.count < 250)
        try await task.value
        #expect(ContinuousClock.now - started < .seconds(5))
    }
}

/// Runs `body` on a new OS thread and waits for it.
func onNewThread(_ body: @escaping @Sendable () -> Void) throws {
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
        body()
        done.signal()
    }
    done.wait()
}
