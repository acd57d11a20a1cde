import Foundation
import Testing
@testable import Model

private func config(_ extra: String = "") throws -> JSONValue {
    let text = """
        {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 50, "max_position_embeddings": 256,
         "rms_norm_eps": 1e-5, "rope_theta": 50000.0, "hidden_act": "silu"\(extra)}
        """
    return try JSONValue.parse(Array(text.utf8))
}

@Suite("HF config.json, names, Q/K permutation, safetensors directories")
struct HFModelTests {
    @Test("config.json → hyperparameters, with transformers' defaults")
    func configFields() throws {
        let hp = try LlamaHyperparameters(huggingFaceConfig: config())
        #expect(hp == LlamaHyperparameters(blockCount: 2, embeddingLength: 64, feedForwardLength: 96, headCount: 4,
                                           headCountKV: 2, headDim: 16, contextLength: 256, vocabSize: 50,
                                           ropeFreqBase: 50000, rmsNormEpsilon: 1e-5, tiedEmbeddings: false))
        let minimal = try LlamaHyperparameters(huggingFaceConfig: JSONValue.parse(Array("""
            {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
             "vocab_size": 10, "head_dim": 8, "tie_word_embeddings": true}
            """.utf8)))
        #expect(minimal.headCountKV == 2 && minimal.headDim == 8 && minimal.ropeFreqBase == 10000)
        #expect(minimal.rmsNormEpsilon == 1e-6 && minimal.tiedEmbeddings && minimal.ropeScaling == nil)
    }

    @Test("unsupported features and bad values are errors naming the field")
    func configErrors() throws {
        let cases: [(String, String)] = [
            (#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#, "rope_scaling"),
            (#", "rope_scaling": {"type": "linear", "factor": 2.0}"#, "rope_scaling"),
            (#", "attention_bias": true"#, "attention_bias"),
            (#", "hidden_act": "gelu""#, "hidden_act"),
            (#", "model_type": "qwen2""#, "model_type"),
            (#", "num_key_value_heads": 3"#, "num_key_value_heads"),
            (#", "hidden_size": 0"#, "hidden_size"),
            (#", "vocab_size": 1.5"#, "vocab_size"),
            (#", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}"#, "rope_scaling.low_freq_factor"),
        ]
        for (extra, field) in cases {
            do {
                _ = try LlamaHyperparameters(huggingFaceConfig: config(extra), path: "/m/config.json")
                Issue.record("accepted \(extra)")
            } catch let e as ModelFileError {
                #expect(e.field == field && e.path == "/m/config.json", "\(e)")
            }
        }
    }

    @Test("Llama 3.1 RoPE scaling: high frequencies kept, low ones divided by the factor, a smooth band between")
    func llama3RopeScaling() throws {
        let hp = try LlamaHyperparameters(huggingFaceConfig: JSONValue.parse(Array("""
            {"hidden_size": 4096, "num_hidden_layers": 1, "num_attention_heads": 32, "intermediate_size": 8,
             "vocab_size": 10, "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
            """.utf8)))
        #expect(hp.ropeScaling == RopeScaling(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4,
                                              originalContextLength: 8192))
        var plain = hp
        plain.ropeScaling = nil
        let scaled = hp.ropeInverseFrequencies, base = plain.ropeInverseFrequencies
        #expect(scaled.count == 64)
        var sawKept = false, sawDivided = false, sawBand = false
        for (s, b) in zip(scaled, base) {
            let wavelength = 2 * Double.pi / Double(b)
            if wavelength < 8192 / 4 { #expect(s == b); sawKept = true }
            else if wavelength > 8192 { #expect(s == b / 8); sawDivided = true }
            else { #expect(s < b && s > b / 8); sawBand = true }
        }
        #expect(sawKept && sawDivided && sawBand)
    }

    @Test("HF ↔ GGUF names")
    func names() {
        let pairs = [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"),
                     ("lm_head.weight", "output.weight"), ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"),
                     ("model.layers.11.self_attn.k_proj.weight", "blk.11.attn_k.weight"),
                     ("model.layers.2.self_attn.v_proj.weight", "blk.2.attn_v.weight"),
                     ("model.layers.2.self_attn.o_proj.weight", "blk.2.attn_output.weight"),
                     ("model.layers.3.mlp.gate_proj.weight", "blk.3.ffn_gate.weight"),
                     ("model.layers.3.mlp.up_proj.weight", "blk.3.ffn_up.weight"),
                     ("model.layers.3.mlp.down_proj.weight", "blk.3.ffn_down.weight"),
                     ("model.layers.4.input_layernorm.weight", "blk.4.attn_norm.weight"),
                     ("model.layers.4.post_attention_layernorm.weight", "blk.4.ffn_norm.weight")]
        for (hf, gguf) in pairs {
            #expect(SafetensorsModel.ggufName(forHuggingFace: hf) == gguf)
            #expect(SafetensorsModel.huggingFaceName(forGGUF: gguf) == hf)
        }
        #expect(SafetensorsModel.ggufName(forHuggingFace: "model.layers.0.self_attn.rotary_emb.inv_freq") == nil)
        #expect(SafetensorsModel.ggufName(forHuggingFace: "model.layers.x.mlp.up_proj.weight") == nil)
    }

    @Test("Q/K permutation is llama.cpp's: per head, [2, d/2] → [d/2, 2]")
    func permutation() {
        // 2 heads of d = 6, one float per row holding its HF row number.
        let hf = f32Bytes((0..<12).map(Float.init))
        let out = hf.withUnsafeBytes { SafetensorsModel.permuteRotateHalfToInterleaved($0, rowBytes: 4, heads: 2, headDim: 6) }
        let rows = Quant.dequantize(.f32, out.bytes, count: 12)
        #expect(rows == [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11])
    }

    /// Writes a tiny HF directory: config + weights (shapes from `hp`, values = index-based), sharded or not.
    func writeModel(_ dir: String, tied: Bool, sharded: Bool, dtype: String = "F32") throws {
        let hp = try LlamaHyperparameters(huggingFaceConfig: config())
        try write(#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 50, "tie_word_embeddings": \#(tied)}"#,
                  to: dir + "/config.json")
        var tensors: [(name: String, dtype: String, shape: [Int], data: [UInt8])] = []
        let names = ["token_embd.weight", "output_norm.weight"] + (tied ? [] : ["output.weight"])
            + (0..<2).flatMap { l in ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"].map { "blk.\(l).\($0).weight" } }
        for name in names {
            let (rows, cols) = DummyWeights.shape(of: name, hp)!
            let values = (0..<(rows * cols)).map { Float($0 % 7) }
            let data = dtype == "F32" ? f32Bytes(values) : values.flatMap { v in withUnsafeBytes(of: UInt16(v.bitPattern >> 16).littleEndian, Array.init) }
            tensors.append((SafetensorsModel.huggingFaceName(forGGUF: name)!, dtype, rows == 1 ? [cols] : [rows, cols], data))
        }
        tensors.append(("model.layers.0.self_attn.rotary_emb.inv_freq", "F32", [8], f32Bytes(Array(repeating: 1, count: 8))))
        if sharded {
            let half = tensors.count / 2
            try write(SafetensorsFile.serialize(Array(tensors[..<half])), to: dir + "/model-00001-of-00002.safetensors")
            try write(SafetensorsFile.serialize(Array(tensors[half...])), to: dir + "/model-00002-of-00002.safetensors")
            let map = tensors.enumerated().map { "\"\($1.name)\": \"model-0000\($0 < half ? 1 : 2)-of-00002.safetensors\"" }
            try write("{\"metadata\": {}, \"weight_map\": {\(map.joined(separator: ", "))}}", to: dir + "/model.safetensors.index.json")
        } else {
            try write(SafetensorsFile.serialize(tensors), to: dir + "/model.safetensors")
        }
    }

    @Test("a directory, single-file or sharded, tied or not; views are zero-copy, Q/K permuted copies")
    func directories() throws {
        for (tied, sharded, dtype) in [(false, false, "F32"), (true, true, "BF16")] {
            let dir = try makeTempDirectory()
            defer { remove(dir) }
            try writeModel(dir, tied: tied, sharded: sharded, dtype: dtype)
            let m = try SafetensorsModel(directory: dir)
            #expect(m.files.count == (sharded ? 2 : 1))
            #expect(m.hyperparameters.tiedEmbeddings == tied)
            #expect(m.hasTensor("output.weight") == !tied)
            #expect(!m.hasTensor("blk.2.attn_q.weight"))
            let v = try m.tensor("blk.1.attn_v.weight")
            #expect(v.type == (dtype == "F32" ? .f32 : .bf16) && v.rowCount == 32 && v.rowLength == 64)
            #expect(v.owner is SafetensorsFile, "a view of the mapping")
            let row1: [Float] = (64..<128).map { Float($0 % 7) }
            #expect(v.dequantizeRow(1) == row1)
            let q = try m.tensor("blk.0.attn_q.weight")
            #expect(q.owner is TensorStorage, "a permuted copy")
            // GGUF row 1 of head 0 is HF row d/2 = 8.
            let hfRow8: [Float] = (512..<576).map { Float($0 % 7) }
            #expect(q.dequantizeRow(1) == hfRow8)
            #expect(throws: WeightsError.self) { try m.tensor("blk.9.attn_q.weight") }
            _ = try SafetensorsModel(directory: dir + "/config.json")
        }
    }

    @Test("a directory with problems: errors name the file and tensor")
    func badDirectories() throws {
        let dir = try makeTempDirectory()
        defer { remove(dir) }
        var e = #expect(throws: ModelFileError.self) { try SafetensorsModel(directory: dir) }
        #expect(e?.field == "file" && e?.path.hasSuffix("config.json") == true)
        try write(#"{"hidden_size": 64"#, to: dir + "/config.json")
        e = #expect(throws: ModelFileError.self) { try SafetensorsModel(directory: dir) }
        #expect(e?.field == "JSON" && e?.path.hasSuffix("config.json") == true)
        try writeModel(dir, tied: true, sharded: false)
        // An I64 tensor where a weight should be: an error when it is asked for, naming the tensor.
        let bad = SafetensorsFile.serialize([("model.embed_tokens.weight", "I64", [50, 64], Array(repeating: 0, count: 50 * 64 * 8))])
        try write(bad, to: dir + "/model.safetensors")
        let m = try SafetensorsModel(directory: dir)
        e = #expect(throws: ModelFileError.self) { try m.tensor("token_embd.weight") }
        #expect(e?.field == "tensor 'model.embed_tokens.weight'" && e?.reason.contains("I64") == true)
        // Sharded, but the index points at a tensor a shard lacks.
        remove(dir + "/model.safetensors")
        try write(SafetensorsFile.serialize([]), to: dir + "/a.safetensors")
        try write(#"{"weight_map": {"model.norm.weight": "a.safetensors"}}"#, to: dir + "/model.safetensors.index.json")
        e = #expect(throws: ModelFileError.self) { try SafetensorsModel(directory: dir) }
        #expect(e?.field == "tensor 'model.norm.weight'" && e?.path.hasSuffix("a.safetensors") == true)
        // Neither weights file.
        remove(dir + "/model.safetensors.index.json")
        e = #expect(throws: ModelFileError.self) { try SafetensorsModel(directory: dir) }
        #expect(e?.field == "weights")
    }
}
