import Testing
@testable import VAttention

/// Programming errors that are preconditions rather than thrown errors: the process must stop, not go on with a
/// wrong address. Exit tests run the body in a child process.
@Suite("Preconditions stop the process")
struct PreconditionTests {
    @Test("a view of a layer that does not exist")
    func viewOutOfRange() async {
        await #expect(processExitsWith: .failure) {
            let spec = KVCacheSpec(layers: 2, kvHeads: 1, headDim: 16, dtype: .fp16, maxSlots: 2, maxContext: 64,
                                   pageSize: 4096, layout: .perLayer)
            let m = try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: 64 * 4096)
            _ = m.view(layer: 2, .key)
        }
    }

    @Test("mapping a page the host backend did not create")
    func foreignPage() async {
        await #expect(processExitsWith: .failure) {
            let backend = HostMemoryBackend()
            let base = try backend.reserve(bytes: 4096)
            try backend.map(PhysicalPage(id: 42 << 32), at: base, pageSize: 4096)
        }
    }
}
