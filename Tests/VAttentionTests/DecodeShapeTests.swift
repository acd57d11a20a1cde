import CUDADriver
import CUDAKernels
import Testing

/// The devices the planning tests plan for, stated explicitly (the code has no default device). H100 SXM: what
/// cuDeviceGetAttribute answers there (the H200 answers the same).
extension CUDADeviceLimits {
    static let h100 = CUDADeviceLimits(multiprocessors: 132, sharedMemoryPerMultiprocessor: 233_472,
                                       sharedMemoryPerBlock: 49_152, sharedMemoryPerBlockOptIn: 232_448,
                                       reservedSharedMemoryPerBlock: 1024, maxBlocksPerMultiprocessor: 32)
    /// A100 SXM (sm_80): 108 SMs, 164 KB per SM, 163 KB per block.
    static let a100 = CUDADeviceLimits(multiprocessors: 108, sharedMemoryPerMultiprocessor: 167_936,
                                       sharedMemoryPerBlock: 49_152, sharedMemoryPerBlockOptIn: 166_912,
                                       reservedSharedMemoryPerBlock: 1024, maxBlocksPerMultiprocessor: 32)
}

/// The host-side launch geometry of the GPU decode kernels (no GPU needed).
@Suite("DecodeShape: split size and shared memory")
struct DecodeShapeTests {
    static let benchShapes = [(1, 32768), (16, 8192), (64, 4096), (128, 2048), (256, 1024), (3, 1), (5, 1100)]

    @Test("the chosen split is a multiple of 32 and the splits cover the longest sequence", arguments: [2, 3, 4, 6])
    func splitsCover(stages: Int) {
        for (batch, length) in Self.benchShapes {
            let s = DecodeShape(batch: batch, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: length,
                                stages: stages, limits: .h100)
            #expect(s.chunk % 32 == 0 && s.chunk > 0)
            #expect(s.maxSplits * s.chunk >= length)
            #expect((s.maxSplits - 1) * s.chunk < length)
        }
    }

    @Test("shared memory per warp fits Hopper's 227 KB and matches the kernel's layout")
    func sharedMemory() {
        // stages × (K + V) × 32 rows × 2·d bytes (no padding: the kernel swizzles)
        #expect(DecodeShape.sharedBytes(stages: 3, headDim: 128) == 3 * 2 * 32 * 256)
        #expect(DecodeShape.sharedBytes(stages: 8, headDim: 128) <= CUDADeviceLimits.h100.sharedMemoryPerBlockOptIn)
    }

    @Test("a pair's 2…4 splits merge in one block when that costs no extra wave; else one-warp blocks")
    func blockMerge() {
        // 16×8K (the shape cuDNN runs as one block per pair): 4 splits of 2048 → 128 blocks of 4 warps, 192 KB each,
        // one per SM: one wave, as the 512 one-warp blocks.
        let s = DecodeShape(batch: 16, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 8192,
                            limits: .h100)
        #expect(s.maxSplits == 4 && s.merge == .block && s.warpsPerBlock == 4)
        #expect(s.sharedBytes == 4 * DecodeShape.sharedBytes(stages: 3, headDim: 128))
        // Too many splits for one block: partials and a merge launch.
        let one = DecodeShape(batch: 1, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 32768,
                              limits: .h100)
        #expect(one.merge == .separate && one.warpsPerBlock == 1)
        // Three 48 KB warps leave no room for a second block on an SM (3 warps resident instead of 4): 136 pairs ×
        // 3 splits take 1 wave as one-warp blocks (408 of 528) but 2 as three-warp blocks (132 per wave), so they stay
        // one-warp blocks.
        var three = DecodeShape(batch: 34, qHeads: 32, kvHeads: 4, headDim: 128, dtype: .bf16, maxLength: 3000,
                                chunk: 1024, limits: .h100)
        #expect(three.maxSplits == 3 && three.splitsFitOneBlock && !three.canMergeInBlock())
        #expect(three.merge == .separate)
        three.batch = 8  // 32 blocks: one wave either way
        #expect(three.canMergeInBlock())
        // Eight stages of d = 128 are 128 KB per warp: two warps do not fit one block.
        let deep = DecodeShape(batch: 16, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 8192,
                               chunk: 4096, stages: 8, limits: .h100)
        #expect(deep.maxSplits == 2 && !deep.splitsFitOneBlock && deep.merge == .separate)
        // One split: the kernel writes the output itself from one one-warp block, whatever the merge says.
        let many = DecodeShape(batch: 256, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 1024,
                               chunk: 1024, limits: .h100)
        #expect(many.maxSplits == 1 && many.warpsPerBlock == 1 && many.mergeName == "none")
        #expect(s.mergeName == "block" && one.mergeName == "separate")
    }

    @Test("a long single sequence is split across the GPU; a large batch runs each pair as one block of 4 warps")
    func splitChoice() {
        let one = DecodeShape(batch: 1, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 32768,
                              limits: .h100)
        #expect(one.maxSplits >= 32 && one.merge == .separate)
        for (batch, length) in [(256, 1024), (64, 4096), (17, 100)] {  // ≥ 132 pairs
            let s = DecodeShape(batch: batch, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: length,
                                limits: .h100)
            #expect(s.merge == .block && s.warpsPerBlock == s.maxSplits)
            #expect(s.maxSplits == min(4, (length + 31) / 32))
        }
        // Four warps of 8 stages (128 KB each) do not fit one block: one warp per pair then.
        let deep = DecodeShape(batch: 256, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 1024,
                               stages: 8, limits: .h100)
        #expect(deep.warpsPerBlock == 1 && deep.maxSplits == 1)
    }

    @Test("the plan follows the device it is given: SM count and shared memory come from its limits")
    func planFollowsTheDevice() {
        // 4 × 8 = 32 pairs of 32K tokens: fewer pairs than the H100's SMs (the wave model: 16 splits of 2K, one
        // wave of 512 one-warp blocks), but two per SM of a 16-SM device (four interleaved warps per pair).
        let h100 = DecodeShape(batch: 4, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 32768,
                               limits: .h100)
        #expect(h100.maxSplits == 16 && h100.merge == .separate)
        var small = CUDADeviceLimits.h100
        small.multiprocessors = 16
        let few = DecodeShape(batch: 4, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 32768,
                              limits: small)
        #expect(few.limits == small && few.maxSplits == 4 && few.merge == .block)
        // Four 3-stage d = 128 warps are 192 KB: one block on an H100, more than an A100 block may hold.
        let a100 = DecodeShape(batch: 16, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 8192,
                               chunk: 2048, limits: .a100)
        #expect(a100.maxSplits == 4 && !a100.splitsFitOneBlock && a100.merge == .separate)
        #expect(DecodeShape(batch: 16, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 8192,
                            chunk: 2048, limits: .h100).splitsFitOneBlock)
    }
}

/// The Hopper prefill kernel's launch geometry (no GPU needed).
@Suite("PrefillConfig: the warpgroup-MMA kernel")
struct PrefillConfigTests {
    @Test("two wgmma blocks fit one SM's shared memory at head dim 128 (the kernel's registers are fitted for two)")
    func wgmmaResidency() {
        let config = PrefillConfig.wgmma
        let bytes = config.sharedBytes(headDim: 128)
        // Q (128 rows) + 2 stages × K and V (64 tokens), bf16, + 1 KB to align the tiles to 1024 bytes.
        #expect(bytes == (128 + 2 * 2 * 64) * 128 * 2 + 1024)
        let h100 = CUDADeviceLimits.h100
        #expect(2 * (bytes + h100.reservedSharedMemoryPerBlock) <= h100.sharedMemoryPerMultiprocessor)
        #expect(h100.residentBlocks(sharedBytes: bytes) == 2)
        #expect(config.isWGMMA && config.rowsPerBlock == 128 && config.warps == 8)
        #expect(config.description == "wg2n64")
        #expect(!PrefillConfig(4, 2, 64, 2).isWGMMA)
    }
}
