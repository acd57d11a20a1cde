import CKernelParams
import CUDADriver

/// Launchers for `cuda/kv_pattern.cu`, the kernels `vattn check cuda` proves the memory manager with: a pattern
/// unique to (request, tensor, token, element) written and re-read through a KV view's address and strides, a count
/// of non-zero elements (the zero page), and one order-sensitive step for CUDA graph capture and replay. Each kernel
/// takes one struct of `kernel_params.h`.
public final class CheckKernels: @unchecked Sendable {
    private let module: CUDAModule
    private let write: CUDAKernel<KVPatternWriteParams>
    private let check: CUDAKernel<KVPatternCheckParams>
    private let countNonzeroKernel: CUDAKernel<CountNonzeroParams>
    private let graphStepKernel: CUDAKernel<GraphStepParams>

    static let file = "kv_pattern.cu"
    private enum Signature {
        static let write = KernelSignature(file: file, name: "kv_pattern_write", KVPatternWriteParams.self)
        static let check = KernelSignature(file: file, name: "kv_pattern_check", KVPatternCheckParams.self)
        static let countNonzero = KernelSignature(file: file, name: "count_nonzero", CountNonzeroParams.self)
        static let graphStep = KernelSignature(file: file, name: "graph_step", GraphStepParams.self)
    }

    public static let signatures = [Signature.write, Signature.check, Signature.countNonzero, Signature.graphStep]

    public convenience init(device: CUDADevice, compiler: NVRTC) throws {
        try self.init(module: try loadKernelModule(Self.file, device: device, compiler: compiler))
    }

    /// Loads every kernel of `module` (built from `kv_pattern.cu`) once; a missing one throws naming it.
    init(module: CUDAModule) throws {
        self.module = module
        write = try module.kernel(Signature.write, KVPatternWriteParams.self)
        check = try module.kernel(Signature.check, KVPatternCheckParams.self)
        countNonzeroKernel = try module.kernel(Signature.countNonzero, CountNonzeroParams.self)
        graphStepKernel = try module.kernel(Signature.graphStep, GraphStepParams.self)
    }

    /// Writes the pattern of (`request`, `tensor`) into tokens `from ..< to` of `slot` of a bf16 view whose tokens hold
    /// `tokenElements` contiguous elements.
    public func writePattern(base: UInt64, slotStride: Int, tokenStride: Int, slot: Int, tokens: Range<Int>,
                             tokenElements: Int, request: UInt64, tensor: Int, stream: CUDAStream?) throws {
        guard !tokens.isEmpty else { return }
        try write.launch(grid: (UInt32(tokens.count), 1, 1), block: (128, 1, 1), stream: stream,
                         KVPatternWriteParams(base: base, slotStride: Int64(slotStride), tokenStride: Int64(tokenStride),
                                              tokenStart: Int64(tokens.lowerBound), request: request,
                                              slot: Int32(slot), tokenElements: Int32(tokenElements),
                                              tensor: Int32(tensor)))
    }

    /// Adds to the uint32 at `mismatches` the elements of tokens `0 ..< tokens` of `slot` that differ from the pattern.
    public func checkPattern(base: UInt64, slotStride: Int, tokenStride: Int, slot: Int, tokens: Int,
                             tokenElements: Int, request: UInt64, tensor: Int, mismatches: UInt64,
                             stream: CUDAStream?) throws {
        guard tokens > 0 else { return }
        try check.launch(grid: (UInt32(tokens), 1, 1), block: (128, 1, 1), stream: stream,
                         KVPatternCheckParams(base: base, slotStride: Int64(slotStride), tokenStride: Int64(tokenStride),
                                              request: request, mismatches: mismatches, slot: Int32(slot),
                                              tokenElements: Int32(tokenElements), tensor: Int32(tensor)))
    }

    /// Adds to the uint32 at `nonzero` the non-zero bf16 elements of `[base, base + count)`.
    public func countNonzero(base: UInt64, count: Int, into nonzero: UInt64, stream: CUDAStream?) throws {
        try countNonzeroKernel.launch(grid: (264, 1, 1), block: (256, 1, 1), stream: stream,
                                      CountNonzeroParams(base: base, count: Int64(count), nonzero: nonzero))
    }

    /// x[i] = x[i]·a + b + i (mod 2^32) for the `n` uint32 at `x`, with `grid` blocks of 256.
    public func graphStep(x: UInt64, n: Int, a: UInt32, b: UInt32, grid: UInt32, stream: CUDAStream?) throws {
        try graphStepKernel.launch(grid: (grid, 1, 1), block: (256, 1, 1), stream: stream,
                                   GraphStepParams(x: x, n: Int32(n), a: a, b: b))
    }
}
