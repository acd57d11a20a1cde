import CUDADriver
import Testing

@Suite("CUDADeviceLimits: residency from the device's shared memory")
struct DeviceLimitsTests {
    // A device stated in full (the numbers an H100 SXM answers): nothing here is a default.
    let h100 = CUDADeviceLimits(multiprocessors: 132, sharedMemoryPerMultiprocessor: 233_472,
                                sharedMemoryPerBlock: 49_152, sharedMemoryPerBlockOptIn: 232_448,
                                reservedSharedMemoryPerBlock: 1024, maxBlocksPerMultiprocessor: 32)

    @Test("blocks per SM: shared memory plus the driver's reserve per block, at most the SM's block limit")
    func residentBlocks() {
        #expect(h100.residentBlocks(sharedBytes: 48 << 10) == 4)  // 4 × (48 KB + 1 KB) ≤ 228 KB < 5 ×
        #expect(h100.residentBlocks(sharedBytes: 3 * (48 << 10)) == 1)
        #expect(h100.residentBlocks(sharedBytes: 0) == 32)  // 228 blocks of 1 KB would fit; the SM takes 32
        var small = h100
        small.maxBlocksPerMultiprocessor = 16
        #expect(small.residentBlocks(sharedBytes: 0) == 16)
        #expect(h100.residentBlocks(sharedBytes: h100.sharedMemoryPerMultiprocessor) == 0)
    }
}
