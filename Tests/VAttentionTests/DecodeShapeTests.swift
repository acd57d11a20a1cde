import CUDAKernels
import Testing

/// The host-side launch geometry of the GPU decode kernels (no GPU needed).
@Suite("DecodeShape: split size and shared memory")
struct DecodeShapeTests {
    static let benchShapes = [(1, 32768), (16, 8192), (64, 4096), (128, 2048), (256, 1024), (3, 1), (5, 1100)]

    @Test("the chosen split is a multiple of 32 and the splits cover the longest sequence", arguments: [2, 3, 4, 6])
    func splitsCover(stages: Int) {
        for (batch, length) in Self.benchShapes {
            let s = DecodeShape(batch: batch, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: length,
                                stages: stages)
            #expect(s.chunk % 32 == 0 && s.chunk > 0)
            #expect(s.maxSplits * s.chunk >= length)
            #expect((s.maxSplits - 1) * s.chunk < length)
        }
    }

    @Test("shared memory per one-warp block fits Hopper's 227 KB and matches the kernel's layout")
    func sharedMemory() {
        // stages × (K + V) × 32 rows × 2·d bytes (no padding: the kernel swizzles)
        #expect(DecodeShape.sharedBytes(stages: 3, headDim: 128) == 3 * 2 * 32 * 256)
        #expect(DecodeShape.sharedBytes(stages: 8, headDim: 128) <= 232_448)
    }

    @Test("a long single sequence is split across the GPU; a large batch keeps one split per sequence")
    func splitChoice() {
        let one = DecodeShape(batch: 1, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 32768)
        #expect(one.maxSplits >= 32)
        let many = DecodeShape(batch: 256, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, maxLength: 1024)
        #expect(many.maxSplits == 1)
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
        #expect(2 * (bytes + 1024) <= 233_472)  // + the 1 KB the driver reserves per block
        #expect(config.isWGMMA && config.rowsPerBlock == 128 && config.warps == 8)
        #expect(config.description == "wg2n64")
        #expect(!PrefillConfig(4, 2, 64, 2).isWGMMA)
    }
}
