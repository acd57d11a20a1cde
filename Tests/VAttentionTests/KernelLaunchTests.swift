import CKernelParams
import CUDADriver
import CUDADriverTesting
@testable import CUDAKernels
import Support
import Testing
import VAttention

/// The launchers on the recording driver (no GPU, no NVRTC: modules are built from a dummy image): which functions
/// they load, and the one parameter struct each launch hands cuLaunchKernel.
@Suite("Kernel launchers: typed kernels, one parameter struct per launch")
struct KernelLaunchTests {
    struct Launch {
        var name: String
        var grid: (UInt32, UInt32, UInt32)
        var block: (UInt32, UInt32, UInt32)
        var sharedBytes: UInt32
        var bytes: [UInt8]
        func params<P: BitwiseCopyable>(_: P.Type) -> P {
            #expect(bytes.count == MemoryLayout<P>.stride, "\(name): \(bytes.count) parameter bytes")
            return bytes.withUnsafeBytes { $0.loadUnaligned(as: P.self) }
        }
    }

    /// A recording driver whose functions are told apart (handle = 1 + the index of the name loaded) and whose
    /// launches keep their parameter struct's bytes (the size the kernel's signature names).
    final class Harness: Sendable {
        let driver = RecordingDriver()
        let loaded = Locked<[String]>([])
        let launches = Locked<[Launch]>([])
        let missing: String?
        let cuda: CUDA
        let device: CUDADevice

        static let strides: [String: Int] = [
            "EmbedRowsParams": MemoryLayout<EmbedRowsParams>.stride,
            "AddRMSNormParams": MemoryLayout<AddRMSNormParams>.stride,
            "RopeAppendStridedParams": MemoryLayout<RopeAppendStridedParams>.stride,
            "RopeAppendPagedParams": MemoryLayout<RopeAppendPagedParams>.stride,
            "SiluMulParams": MemoryLayout<SiluMulParams>.stride,
            "GatherRowsParams": MemoryLayout<GatherRowsParams>.stride,
            "FillDummyParams": MemoryLayout<FillDummyParams>.stride,
            "SampleTokensParams": MemoryLayout<SampleTokensParams>.stride,
            "KVAppendStridedParams": MemoryLayout<KVAppendStridedParams>.stride,
            "KVAppendPagedParams": MemoryLayout<KVAppendPagedParams>.stride,
            "DecodeStridedParams": MemoryLayout<DecodeStridedParams>.stride,
            "DecodePagedParams": MemoryLayout<DecodePagedParams>.stride,
            "DecodeMergeParams": MemoryLayout<DecodeMergeParams>.stride,
            "CopyParams": MemoryLayout<CopyParams>.stride,
            "PrefillParams": MemoryLayout<PrefillParams>.stride,
        ]

        init(missing: String? = nil) throws {
            self.missing = missing
            var api = driver.api
            let loaded = self.loaded, launches = self.launches
            let parameterOf = Dictionary(
                (LlamaKernels.signatures + DecodeAttentionKernels.signatures
                    + PrefillAttentionKernels.signatures(hopper: true)).map { ($0.name, $0.parameter) },
                uniquingKeysWith: { a, _ in a })
            api.moduleGetFunction = { _, name in
                if name == missing { return (500, nil) }  // CUDA_ERROR_NOT_FOUND
                let index = loaded.withLock { $0.append(name); return $0.count }
                return (0, OpaquePointer(bitPattern: UInt(index)))
            }
            api.launchKernel = { f, grid, block, shared, _, params in
                let name = loaded.withLock { $0[Int(UInt(bitPattern: f)) - 1] }
                let size = Harness.strides[parameterOf[name] ?? ""] ?? 0
                let bytes = [UInt8](UnsafeRawBufferPointer(start: params[0], count: size))
                launches.withLock { $0.append(Launch(name: name, grid: grid, block: block, sharedBytes: shared,
                                                     bytes: bytes)) }
                return 0
            }
            cuda = CUDA(api: api)
            device = try CUDADevice(cuda)  // binds this thread
        }

        func module(_ name: String) throws -> CUDAModule { try CUDAModule(cuda, image: [0], name: name) }
    }

    @Test("the recording driver's device answers its limits; planning takes them from there")
    func limitsFromTheDevice() throws {
        let h = try Harness()
        let limits = try h.device.limits()
        #expect(limits == CUDADeviceLimits(multiprocessors: 4, sharedMemoryPerMultiprocessor: 100 << 10,
                                           sharedMemoryPerBlock: 48 << 10, sharedMemoryPerBlockOptIn: 99 << 10,
                                           reservedSharedMemoryPerBlock: 1 << 10, maxBlocksPerMultiprocessor: 16))
        #expect(try h.device.architecture() == "sm_90")
        // An attribute the fake device does not know is an error, not a made-up value.
        #expect(throws: CUDAError.self) { _ = try h.device.attribute(1) }
    }

    @Test("each launcher loads exactly the kernels its signatures list, once, at init")
    func loadsItsSignatures() throws {
        let h = try Harness()
        let limits = try h.device.limits()
        _ = try LlamaKernels(module: try h.module("llama.cu"), limits: limits)
        #expect(h.loaded.withLock { $0 } == LlamaKernels.signatures.map(\.name))
        h.loaded.withLock { $0.removeAll() }
        _ = try DecodeAttentionKernels(attention: try h.module("decode_attention.cu"),
                                       append: try h.module("kv_append.cu"), limits: limits)
        let decode = h.loaded.withLock { $0 }
        #expect(decode.count == DecodeAttentionKernels.signatures.count
                && Set(decode) == Set(DecodeAttentionKernels.signatures.map(\.name)))
        for hopper in [false, true] {
            h.loaded.withLock { $0.removeAll() }
            _ = try PrefillAttentionKernels(module: try h.module("prefill_attention.cu"), hopper: hopper,
                                            limits: limits)
            #expect(h.loaded.withLock { $0 } == PrefillAttentionKernels.signatures(hopper: hopper).map(\.name))
        }
    }

    @Test("a kernel the module lacks fails the launcher's init with an error naming the kernel and the file")
    func missingKernel() throws {
        let h = try Harness(missing: "silu_mul")
        #expect {
            _ = try LlamaKernels(module: try h.module("llama.cu"), limits: try h.device.limits())
        } throws: { error in
            guard let e = error as? CUDAError else { return false }
            return e.code == 500 && e.call == "cuModuleGetFunction(silu_mul)" && e.message.contains("llama.cu")
        }
    }

    @Test("a Llama kernel launch hands over one struct with the launcher's values; grids follow the device's SMs")
    func llamaLaunch() throws {
        let h = try Harness()
        let limits = try h.device.limits()
        let k = try LlamaKernels(module: try h.module("llama.cu"), limits: limits)
        try k.siluMul(gateUp: 0x1000, into: 0x2000, rows: 1000, width: 4096, stream: nil)
        try k.sample(logits: 0x3000, rows: 3, vocab: 49152, rowStride: 49160, params: 0x4000, into: 0x5000,
                     stream: nil)
        let launches = h.launches.withLock { $0 }
        #expect(launches.map(\.name) == ["silu_mul", "sample_tokens"])
        #expect(launches[0].grid.0 == UInt32(limits.multiprocessors * 16) && launches[0].block.0 == 256)
        let silu = launches[0].params(SiluMulParams.self)
        #expect(silu.gateUp == 0x1000 && silu.out == 0x2000 && silu.width == 4096 && silu.total == 4_096_000)
        let sample = launches[1].params(SampleTokensParams.self)
        #expect(launches[1].grid.0 == 3 && launches[1].block.0 == 1024)
        #expect(sample.logits == 0x3000 && sample.rowStride == 49160 && sample.settings == 0x4000
                && sample.out == 0x5000 && sample.vocab == 49152)
    }

    @Test("decode: the split kernel's struct carries the workspace and, with a separate merge, no output")
    func decodeLaunch() throws {
        let h = try Harness()
        let limits = try h.device.limits()
        let kernels = try DecodeAttentionKernels(attention: try h.module("decode_attention.cu"),
                                                 append: try h.module("kv_append.cu"), limits: limits)
        let shape = DecodeShape(batch: 2, qHeads: 8, kvHeads: 2, headDim: 128, dtype: .bf16, maxLength: 4096,
                                chunk: 512, limits: limits)
        #expect(shape.maxSplits == 8 && shape.merge == .separate && shape.limits == limits)
        let workspace = try DecodeWorkspace(h.cuda, shape: shape)
        let k = KVTensorView(address: 0x10_0000, slotStride: 1 << 20, tokenStride: 256, headStride: 128, dtype: .bf16)
        let v = KVTensorView(address: 0x20_0000, slotStride: 1 << 20, tokenStride: 256, headStride: 128, dtype: .bf16)
        h.launches.withLock { $0.removeAll() }
        try kernels.decode(query: 0x1000, keys: k, values: v, slots: 0x2000, lengths: 0x3000, output: 0x4000, shape: shape,
                     workspace: workspace, scale: 0.125, stream: nil)
        let launches = h.launches.withLock { $0 }
        #expect(launches.map(\.name) == ["decode_partial_strided_bf16_d128_g4", "decode_merge_bf16_d128"])
        let split = launches[0].params(DecodeStridedParams.self)
        #expect(launches[0].grid == (2, 8, 2) && launches[0].block == (32, 1, 1)
                && launches[0].sharedBytes == UInt32(shape.sharedBytes))
        #expect(split.q == 0x1000 && split.keys == 0x10_0000 && split.values == 0x20_0000
                && split.slotStride == 1 << 20 && split.tokenStride == 256 && split.headStride == 128
                && split.slots == 0x2000 && split.lengths == 0x3000 && split.chunk == 512 && split.maxSplits == 8
                && split.stages == 3 && split.scaleLog2 == 0.125 * 1.4426950408889634
                && split.partialMax == workspace.maxes.address && split.partialSum == workspace.sums.address
                && split.partialAcc == workspace.accs.address && split.out == 0)
        let merge = launches[1].params(DecodeMergeParams.self)
        #expect(launches[1].grid == (8, 2, 1) && launches[1].block == (128, 1, 1))
        #expect(merge.partialMax == workspace.maxes.address && merge.lengths == 0x3000 && merge.chunk == 512
                && merge.maxSplits == 8 && merge.out == 0x4000)
    }

    @Test("prefill: the paged launch's struct has the pool strides and the block table")
    func prefillLaunch() throws {
        let h = try Harness()
        let k = try PrefillAttentionKernels(module: try h.module("prefill_attention.cu"), hopper: true,
                                            limits: try h.device.limits())
        try k.launch(query: 0x1000, output: 0x2000, kv: .paged(keys: 0x3000, values: 0x4000, table: 0x5000,
                                                               blockSize: 16),
                     chunkLength: 300, offset: 40, qHeads: 32, kvHeads: 8, headDim: 128, dtype: .bf16, scale: 0.5,
                     stream: nil)
        let launch = try #require(h.launches.withLock { $0 }.first)
        #expect(launch.name == "prefill_bf16_d128_wg2n64_paged")
        #expect(launch.grid == (32, 3, 1) && launch.block == (256, 1, 1)
                && launch.sharedBytes == UInt32(PrefillConfig.wgmma.sharedBytes(headDim: 128)))
        let p = launch.params(PrefillParams.self)
        #expect(p.q == 0x1000 && p.out == 0x2000 && p.keys == 0x3000 && p.values == 0x4000 && p.table == 0x5000
                && p.n == 300 && p.offset == 40 && p.qHeads == 32 && p.kvHeads == 8
                && p.scaleLog2 == 0.5 * 1.4426950408889634
                && p.tokenStride == 8 * 128 && p.headStride == 128 && p.blockSize == 16)
    }
}
