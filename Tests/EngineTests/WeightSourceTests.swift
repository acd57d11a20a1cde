import Engine
import Foundation
import Model
import Testing
import VAttention

/// GGUF-layout weights held in memory: the reference the other sources must reproduce.
final class InMemoryWeights: LlamaWeights, @unchecked Sendable {
    let hyperparameters: LlamaHyperparameters
    let tensors: [String: WeightTensor]
    init(_ hp: LlamaHyperparameters, _ tensors: [String: WeightTensor]) {
        hyperparameters = hp
        self.tensors = tensors
    }
    func tensor(_ name: String) throws -> WeightTensor {
        guard let t = tensors[name] else { throw WeightsError.missingTensor(name, in: "memory") }
        return t
    }
    func hasTensor(_ name: String) -> Bool { tensors[name] != nil }
}

/// GGUF names of every tensor of a Llama of this shape.
func llamaTensorNames(_ hp: LlamaHyperparameters) -> [String] {
    ["token_embd.weight", "output_norm.weight"] + (hp.tiedEmbeddings ? [] : ["output.weight"])
        + (0..<hp.blockCount).flatMap { l in
            ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
                .map { "blk.\(l).\($0).weight" }
        }
}

/// HF row order from GGUF row order for Q/K (the inverse of llama.cpp's permute): HF row h·d + j·d/2 + i is
/// GGUF row h·d + 2i + j.
func unpermuteToRotateHalf(_ rows: [[Float]], heads: Int) -> [[Float]] {
    let d = rows.count / heads, half = d / 2
    var out = rows
    for h in 0..<heads {
        for i in 0..<half {
            for j in 0..<2 { out[h * d + j * half + i] = rows[h * d + 2 * i + j] }
        }
    }
    return out
}

func bf16Bytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { withUnsafeBytes(of: UInt16($0.bitPattern >> 16).littleEndian, Array.init) }
}

/// Writes `weights` as an HF checkpoint directory: config.json, and one safetensors file (or two shards with an
/// index), Q/K rows in HF (rotate-half) order unless `permute` is false.
func writeHuggingFace(_ weights: any LlamaWeights, to dir: String, dtype: String = "F32", sharded: Bool = false,
                      permute: Bool = true) throws {
    let hp = weights.hyperparameters
    let config = """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": \(hp.embeddingLength),
         "num_hidden_layers": \(hp.blockCount), "num_attention_heads": \(hp.headCount),
         "num_key_value_heads": \(hp.headCountKV), "head_dim": \(hp.headDim), "intermediate_size": \(hp.feedForwardLength),
         "vocab_size": \(hp.vocabSize), "max_position_embeddings": \(hp.contextLength),
         "rms_norm_eps": \(Double(hp.rmsNormEpsilon)), "rope_theta": \(Double(hp.ropeFreqBase)),
         "tie_word_embeddings": \(hp.tiedEmbeddings), "hidden_act": "silu", "torch_dtype": "float32"}
        """
    try Data(config.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
    var tensors: [(name: String, dtype: String, shape: [Int], data: [UInt8])] = []
    for name in llamaTensorNames(hp) {
        let t = try weights.tensor(name)
        var rows = (0..<t.rowCount).map { t.dequantizeRow($0) }
        if permute && name.hasSuffix("attn_q.weight") { rows = unpermuteToRotateHalf(rows, heads: hp.headCount) }
        if permute && name.hasSuffix("attn_k.weight") { rows = unpermuteToRotateHalf(rows, heads: hp.headCountKV) }
        let flat = rows.flatMap { $0 }
        let shape = name.hasSuffix("norm.weight") ? [t.rowLength] : [t.rowCount, t.rowLength]
        let data = dtype == "F32" ? flat.withUnsafeBytes(Array.init) : bf16Bytes(flat)
        tensors.append((SafetensorsModel.huggingFaceName(forGGUF: name)!, dtype, shape, data))
    }
    if sharded {
        let half = tensors.count / 2
        let parts = [Array(tensors[..<half]), Array(tensors[half...])]
        var map: [String] = []
        for (i, part) in parts.enumerated() {
            let file = "model-0000\(i + 1)-of-00002.safetensors"
            try Data(SafetensorsFile.serialize(part)).write(to: URL(fileURLWithPath: dir + "/" + file))
            map += part.map { "\"\($0.name)\": \"\(file)\"" }
        }
        try Data("{\"metadata\": {}, \"weight_map\": {\(map.joined(separator: ", "))}}".utf8)
            .write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
    } else {
        try Data(SafetensorsFile.serialize(tensors)).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
    }
}

/// Logits of a prefill of `prompt` and then `decodes` greedy decode steps (one list per forward).
func logitsTrace(_ model: CPULlamaModel, prompt: [TokenID], decodes: Int) throws -> [[Float]] {
    let kv = try Fixtures.vattentionStore(model, slots: 1, maxContext: 64, budget: 32 << 20)
    let slot = try kv.allocateSlot(expectedLength: prompt.count + decodes)
    try kv.reserve([(slot, prompt.count)])
    var out = model.forward([SequenceChunk(slot: slot, start: 0, tokens: prompt, wantsLogits: true)], kv: kv)
    var length = prompt.count
    for _ in 0..<decodes {
        let last = out.last!
        let next = TokenID(last.indices.max { last[$0] < last[$1] }!)
        try kv.reserve([(slot, length + 1)])
        out += model.forward([SequenceChunk(slot: slot, start: length, tokens: [next], wantsLogits: true)], kv: kv)
        length += 1
    }
    return out
}

func makeTempDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vattn-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

@Suite("Weight sources: safetensors and dummy weights through the CPU forward")
struct WeightSourceTests {
    static let tiny = LlamaHyperparameters(blockCount: 2, embeddingLength: 64, feedForwardLength: 96, headCount: 4,
                                           headCountKV: 2, headDim: 16, contextLength: 128, vocabSize: 80,
                                           ropeFreqBase: 10000, rmsNormEpsilon: 1e-5, tiedEmbeddings: false)

    /// A random tiny Llama in GGUF layout: dummy values, norms perturbed so they matter; `bf16` rounds every value.
    static func reference(tied: Bool, bf16: Bool) throws -> InMemoryWeights {
        var hp = tiny
        hp.tiedEmbeddings = tied
        let dummy = DummyWeights(hyperparameters: hp, seed: 7)
        var tensors: [String: WeightTensor] = [:]
        for name in llamaTensorNames(hp) {
            let t = try dummy.tensor(name)
            var values = (0..<t.rowCount).flatMap { t.dequantizeRow($0) }
            if name.hasSuffix("norm.weight") {
                values = values.indices.map { 1 + 0.5 * DummyWeights.value(seed: 9, nameHash: DummyWeights.nameHash(name), index: UInt64($0), rowLength: 1) }
            }
            if bf16 {
                let bytes = bf16Bytes(values)
                let storage = TensorStorage(byteCount: bytes.count)
                bytes.withUnsafeBytes { storage.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                tensors[name] = WeightTensor(name: name, type: .bf16, rowLength: t.rowLength, rowCount: t.rowCount,
                                             data: storage.bytes, owner: storage)
            } else {
                tensors[name] = WeightTensor(name: name, rowLength: t.rowLength, rowCount: t.rowCount, values: values)
            }
        }
        return InMemoryWeights(hp, tensors)
    }

    @Test("HF safetensors (rotate-half Q/K, HF names) = the same model in GGUF layout, logit for logit")
    func safetensorsMatchesGGUFLayout() throws {
        let prompt: [TokenID] = [3, 17, 42, 5, 79, 0, 11]
        for (tied, bf16, sharded) in [(false, false, false), (true, true, true)] {
            let reference = try Self.reference(tied: tied, bf16: bf16)
            let expected = try logitsTrace(CPULlamaModel(weights: reference), prompt: prompt, decodes: 3)
            #expect(expected.allSatisfy { $0.count == 80 && $0.allSatisfy(\.isFinite) })

            let dir = try makeTempDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try writeHuggingFace(reference, to: dir, dtype: bf16 ? "BF16" : "F32", sharded: sharded)
            let hf = try SafetensorsModel(directory: dir)
            #expect(hf.hyperparameters == reference.hyperparameters)
            let got = try logitsTrace(CPULlamaModel(weights: hf), prompt: prompt, decodes: 3)
            #expect(got == expected, "tied \(tied), bf16 \(bf16), sharded \(sharded)")

            // Without the permutation the numbers differ: the test does see the RoPE convention.
            let raw = try makeTempDirectory()
            defer { try? FileManager.default.removeItem(atPath: raw) }
            try writeHuggingFace(reference, to: raw, dtype: bf16 ? "BF16" : "F32", permute: false)
            let wrong = try logitsTrace(CPULlamaModel(weights: SafetensorsModel(directory: raw)), prompt: prompt, decodes: 0)
            #expect(wrong[0] != expected[0])
        }
    }

    @Test("a tensor of the wrong shape is an error at load, naming it")
    func shapeChecked() throws {
        let reference = try Self.reference(tied: false, bf16: false)
        var tensors = reference.tensors
        tensors["blk.1.attn_k.weight"] = WeightTensor(name: "blk.1.attn_k.weight", rowLength: 64, rowCount: 16,
                                                      values: Array(repeating: 0, count: 1024))
        let e = #expect(throws: WeightsError.self) { try CPULlamaModel(weights: InMemoryWeights(reference.hyperparameters, tensors)) }
        #expect(e?.field == "blk.1.attn_k.weight")
    }

    @Test("dummy weights run through CPULlamaModel and LLMEngine: finite logits, full outputs")
    func dummyThroughEngine() throws {
        let model = try CPULlamaModel(weights: DummyWeights(hyperparameters: Self.tiny, seed: 1))
        #expect(model.matmulInUse == .float32, "F32 weights take the float32 path")
        let logits = try logitsTrace(model, prompt: [1, 2, 3, 4], decodes: 2)
        #expect(logits.allSatisfy { $0.count == 80 && $0.allSatisfy(\.isFinite) })
        #expect(Set(logits.map { $0.max()! }).count > 1, "not constant")
        // No tokenizer exists for dummy weights; the engine gets an all-normal stand-in vocabulary.
        let vocab = Self.tiny.vocabSize
        let tokenizer = Tokenizer(tokens: (0..<vocab).map { "<\($0)>" }, types: Array(repeating: .normal, count: vocab),
                                  merges: [], preTokenizer: .gpt2, bos: nil, eos: nil, pad: nil, unknown: nil, addBOS: false)
        let engine = LLMEngine(model: model, tokenizer: tokenizer, kv: try Fixtures.vattentionStore(model, slots: 4, maxContext: 64),
                               configuration: EngineConfiguration(tokenBudget: 16, maxRunning: 4))
        let ids = try [[5, 6, 7], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12, 13, 14, 15, 16, 17, 18, 19]].map {
            try engine.add(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 6))
        }
        try engine.runToCompletion()
        for id in ids {
            let out = try #require(engine.output(of: id))
            #expect(out.count == 6 && out.allSatisfy { $0 >= 0 && Int($0) < vocab })
        }
    }

    @Test("SmolLM2 dequantized to F32 safetensors (HF order) gives the GGUF's logits exactly",
          .enabled(if: Fixtures.runModelTests, Fixtures.skipReason))
    func smolLM2AsSafetensors() throws {
        let (file, gguf, tokenizer) = try Fixtures.loaded.get()
        let dir = try makeTempDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeHuggingFace(GGUFWeights(file: file), to: dir)
        let hf = try SafetensorsModel(directory: dir)
        #expect(hf.hyperparameters == gguf.hyperparameters)
        let prompt = tokenizer.encode("The capital of France is")
        // On the float32 path Q4_1 rows are dequantized before every dot product, so F32 copies of them compute the
        // same sums (F32 weights always take that path).
        let expected = try logitsTrace(CPULlamaModel(file: file, matmul: .float32), prompt: prompt, decodes: 2)
        let got = try logitsTrace(CPULlamaModel(weights: hf), prompt: prompt, decodes: 2)
        #expect(got == expected)
        #expect(gguf.matmulInUse == .best)  // the default: integer kernels on this CPU's best instruction set
    }
}
