import CKernelParams
import CUDAKernels
import Testing

/// The calling convention of the GPU kernels, checked on the CPU against the very sources the binary embeds: every
/// kernel the Swift side loads is an `extern "C" __global__` function of its file taking exactly one parameter, the
/// `kernel_params.h` struct the launcher fills.
@Suite("Kernel sources: every launched kernel takes its one parameter struct")
struct KernelSourceTests {
    /// Every kernel the launchers load (the prefill list with the Hopper kernels: a superset of the other).
    static let signatures = LlamaKernels.signatures + DecodeAttentionKernels.signatures + CheckKernels.signatures
        + PrefillAttentionKernels.signatures(hopper: true)
    /// The files those kernels live in: every embedded .cu file.
    static let files = ["llama.cu", "decode_attention.cu", "kv_append.cu", "prefill_attention.cu", "kv_pattern.cu"]

    static func kernels(in file: String) -> [String: KernelDeclaration] {
        var preprocessor = MiniPreprocessor()
        // The headers the file includes define macros it uses (NEG_INF, …).
        for header in CUDASources.files.keys.sorted() where header.hasSuffix(".cuh") || header.hasSuffix(".h") {
            _ = preprocessor.tokens(CUDASources.files[header]!)
        }
        let declarations = KernelDeclaration.all(in: preprocessor.tokens(CUDASources.files[file]!))
        return Dictionary(declarations.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    @Test("the launchers' kernels and the embedded files' kernels are the same set, each with one struct parameter",
          arguments: files)
    func oneStructParameter(file: String) throws {
        let source = try #require(CUDASources.files[file], "\(file) is embedded")
        #expect(source.contains("#include \"kernel_params.h\""))
        let declared = Self.kernels(in: file)
        let launched = Self.signatures.filter { $0.file == file }
        #expect(!launched.isEmpty)
        for signature in launched {
            guard let kernel = declared[signature.name] else {
                Issue.record("\(signature): no extern \"C\" __global__ \(signature.name) in \(file)")
                continue
            }
            #expect(kernel.parameters == [["const", signature.parameter, "p"]],
                    "\(signature.name) takes \(kernel.parameters.map { $0.joined(separator: " ") })")
        }
        let unlaunched = Set(declared.keys).subtracting(launched.map(\.name))
        #expect(unlaunched.isEmpty, "kernels no launcher loads: \(unlaunched.sorted())")
        #expect(Set(launched.map(\.name)).count == launched.count, "a kernel listed twice")
    }

    @Test("the preprocessor stamps out the macro-generated kernels (a check that the check sees them)")
    func macroKernelsAreSeen() {
        let decode = Self.kernels(in: "decode_attention.cu")
        // 2 dtypes × 2 head dims × 5 groups × 2 storages, a merge per dtype and head dim, the copy.
        #expect(decode.count == 45)
        #expect(decode["decode_partial_paged_fp16_d64_g3"]?.parameters == [["const", "DecodePagedParams", "p"]])
        let prefill = Self.kernels(in: "prefill_attention.cu")
        #expect(prefill["prefill_bf16_d128_wg2n64_paged"] != nil && prefill["prefill_fp16_d64_w4m1n64s2_contig"] != nil)
        #expect(prefill.count == PrefillAttentionKernels.signatures(hopper: true).count)
        #expect(Self.kernels(in: "kv_pattern.cu")["graph_step"]?.parameters == [["const", "GraphStepParams", "p"]])
    }

    @Test("every parameter struct is declared in kernel_params.h with the size Swift imports")
    func structsMatchTheHeader() throws {
        let header = try #require(CUDASources.files["kernel_params.h"], "kernel_params.h is embedded")
        let tokens = MiniPreprocessor.tokenize(MiniPreprocessor.withoutComments(header))
        // `} Name;` closes each typedef; `sizeof ( Name ) == N` is its asserted size.
        var declared: Set<String> = []
        var asserted: [String: Int] = [:]
        for i in tokens.indices.dropLast(5) {
            if tokens[i] == "}" && tokens[i + 2] == ";" { declared.insert(tokens[i + 1]) }
            if tokens[i] == "sizeof" && tokens[i + 1] == "(" && tokens[i + 3] == ")" && tokens[i + 4] == "=" {
                asserted[tokens[i + 2]] = Int(tokens[i + 6])
            }
        }
        let used = Set(Self.signatures.map(\.parameter))
        #expect(used.isSubset(of: declared), "not in kernel_params.h: \(used.subtracting(declared).sorted())")
        let swiftSizes: [String: Int] = [
            "EmbedRowsParams": MemoryLayout<EmbedRowsParams>.size,
            "AddRMSNormParams": MemoryLayout<AddRMSNormParams>.size,
            "RopeAppendStridedParams": MemoryLayout<RopeAppendStridedParams>.size,
            "RopeAppendPagedParams": MemoryLayout<RopeAppendPagedParams>.size,
            "SiluMulParams": MemoryLayout<SiluMulParams>.size,
            "GatherRowsParams": MemoryLayout<GatherRowsParams>.size,
            "FillDummyParams": MemoryLayout<FillDummyParams>.size,
            "SampleTokensParams": MemoryLayout<SampleTokensParams>.size,
            "KVAppendStridedParams": MemoryLayout<KVAppendStridedParams>.size,
            "KVAppendPagedParams": MemoryLayout<KVAppendPagedParams>.size,
            "DecodeStridedParams": MemoryLayout<DecodeStridedParams>.size,
            "DecodePagedParams": MemoryLayout<DecodePagedParams>.size,
            "DecodeMergeParams": MemoryLayout<DecodeMergeParams>.size,
            "CopyParams": MemoryLayout<CopyParams>.size,
            "PrefillParams": MemoryLayout<PrefillParams>.size,
            "KVPatternWriteParams": MemoryLayout<KVPatternWriteParams>.size,
            "KVPatternCheckParams": MemoryLayout<KVPatternCheckParams>.size,
            "CountNonzeroParams": MemoryLayout<CountNonzeroParams>.size,
            "GraphStepParams": MemoryLayout<GraphStepParams>.size,
        ]
        #expect(Set(swiftSizes.keys) == declared, "the list above names every struct of the header")
        for (name, size) in swiftSizes {
            // MemoryLayout.size omits tail padding; the C size is a multiple of the 8-byte alignment.
            #expect(asserted[name] == (size + 7) / 8 * 8, "\(name): header \(asserted[name] ?? -1), Swift \(size)")
        }
    }
}
