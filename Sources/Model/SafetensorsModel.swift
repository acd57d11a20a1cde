/// An HF Llama checkpoint directory as a weight source: `config.json` plus `model.safetensors`, or shards listed in
/// `model.safetensors.index.json`. Tensors are served under their GGUF names in llama.cpp's layout:
///
/// - F32/F16/BF16 tensors are views of the mapped files (no copy), except
/// - `attn_q` / `attn_k`, whose rows are permuted as llama.cpp's converter does, because HF Llama applies RoPE to
///   (x[i], x[i + d/2]) ("rotate half") while our forward rotates adjacent pairs (x[2i], x[2i+1]). Each call for one
///   of them returns a fresh permuted copy (the caller keeps it; nothing is cached here).
public final class SafetensorsModel: LlamaWeights, @unchecked Sendable {
    public let directory: String
    public let hyperparameters: LlamaHyperparameters
    /// The parsed config.json.
    public let config: JSONValue
    public let files: [SafetensorsFile]
    /// GGUF name → (index into `files`, the HF entry).
    private let tensors: [String: (file: Int, entry: SafetensorsEntry)]

    /// Opens `directory` (or the directory of a `config.json` path) and validates every safetensors header.
    public init(directory path: String) throws {
        let dir = path.hasSuffix("/config.json") ? String(path.dropLast("/config.json".count)) : path
        directory = dir
        let configPath = dir + "/config.json"
        config = try MappedFile(path: configPath).json()
        var hp = try LlamaHyperparameters(huggingFaceConfig: config, path: configPath)

        // Which files hold which HF names.
        let single = dir + "/model.safetensors", indexPath = dir + "/model.safetensors.index.json"
        var fileNames: [String] = []
        var expected: [String: String] = [:]  // HF name → file name, from the index
        if MappedFile.exists(single) {
            fileNames = ["model.safetensors"]
        } else if MappedFile.exists(indexPath) {
            let index = try MappedFile(path: indexPath).json()
            guard let map = index["weight_map"]?.objectValue else {
                throw ModelFileError(path: indexPath, field: "weight_map", reason: "missing or not an object")
            }
            for (name, file) in map {
                guard let f = file.stringValue, !f.isEmpty, !f.contains("/") else {
                    throw ModelFileError(path: indexPath, field: "weight_map.\(name)", reason: "is not a file name in the directory")
                }
                expected[name] = f
                if !fileNames.contains(f) { fileNames.append(f) }
            }
        } else {
            throw ModelFileError(path: dir, field: "weights",
                                 reason: "neither model.safetensors nor model.safetensors.index.json is there")
        }
        files = try fileNames.map { try SafetensorsFile(path: dir + "/" + $0) }

        var tensors: [String: (file: Int, entry: SafetensorsEntry)] = [:]
        for (i, file) in files.enumerated() {
            for entry in file.entries {
                if let f = expected[entry.name], f != fileNames[i] { continue }  // the index says it lives elsewhere
                guard let gguf = Self.ggufName(forHuggingFace: entry.name) else { continue }  // e.g. rotary inv_freq
                tensors[gguf] = (i, entry)
            }
        }
        for (name, file) in expected where Self.ggufName(forHuggingFace: name) != nil {
            let i = fileNames.firstIndex(of: file)!
            guard files[i].entry(named: name) != nil else {
                throw ModelFileError(path: files[i].path, field: "tensor '\(name)'",
                                     reason: "listed in model.safetensors.index.json but not in the file")
            }
        }
        self.tensors = tensors
        hp.tiedEmbeddings = hp.tiedEmbeddings || tensors["output.weight"] == nil
        hyperparameters = hp
    }

    public func hasTensor(_ ggufName: String) -> Bool { tensors[ggufName] != nil }

    public func tensor(_ ggufName: String) throws -> WeightTensor {
        guard let (fileIndex, entry) = tensors[ggufName] else {
            throw WeightsError.missingTensor(ggufName, in: directory + " (HF name \(Self.huggingFaceName(forGGUF: ggufName) ?? "?"))")
        }
        let file = files[fileIndex]
        func fail(_ reason: String) -> ModelFileError {
            ModelFileError(path: file.path, field: "tensor '\(entry.name)'", reason: reason)
        }
        guard let type = entry.ggmlType else {
            throw fail("dtype \(entry.dtype) is not supported (F32, F16, BF16)")
        }
        guard (1...2).contains(entry.shape.count), entry.shape.allSatisfy({ $0 > 0 }) else {
            throw fail("shape \(entry.shape): expected a non-empty matrix or vector")
        }
        let rowLength = entry.shape.last!, rowCount = entry.shape.count == 2 ? entry.shape[0] : 1
        let data = file.data(of: entry)
        let hp = hyperparameters
        let heads: Int? = ggufName.hasSuffix(".attn_q.weight") ? hp.headCount
            : ggufName.hasSuffix(".attn_k.weight") ? hp.headCountKV : nil
        guard let heads else {
            return WeightTensor(name: ggufName, type: type, rowLength: rowLength, rowCount: rowCount, data: data, owner: file)
        }
        guard rowCount == heads * hp.headDim else {
            throw fail("\(rowCount) rows, expected \(heads) heads × \(hp.headDim) (from config.json)")
        }
        let storage = Self.permuteRotateHalfToInterleaved(data, rowBytes: type.byteCount(elements: rowLength),
                                                         heads: heads, headDim: hp.headDim)
        return WeightTensor(name: ggufName, type: type, rowLength: rowLength, rowCount: rowCount, data: storage.bytes,
                            owner: storage)
    }

    /// llama.cpp's `permute` for Q/K (convert_hf_to_gguf.py): per head, rows viewed as [2, d/2] are transposed to
    /// [d/2, 2], so GGUF row 2i+j of a head is HF row j·d/2 + i.
    public static func permuteRotateHalfToInterleaved(_ data: UnsafeRawBufferPointer, rowBytes: Int, heads: Int,
                                                      headDim: Int) -> TensorStorage {
        let storage = TensorStorage(byteCount: heads * headDim * rowBytes)
        let half = headDim / 2
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    let from = h * headDim + j * half + i, to = h * headDim + 2 * i + j
                    (storage.pointer + to * rowBytes).copyMemory(from: data.baseAddress! + from * rowBytes, byteCount: rowBytes)
                }
            }
        }
        return storage
    }

    // MARK: Names

    static let layerSuffixes: [(hf: String, gguf: String)] = [
        ("self_attn.q_proj.weight", "attn_q.weight"), ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"), ("self_attn.o_proj.weight", "attn_output.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"), ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"), ("input_layernorm.weight", "attn_norm.weight"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ]
    static let globalNames: [(hf: String, gguf: String)] = [
        ("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ]

    /// "model.layers.3.self_attn.q_proj.weight" → "blk.3.attn_q.weight"; nil for names the forward pass does not use.
    public static func ggufName(forHuggingFace name: String) -> String? {
        if let g = globalNames.first(where: { $0.hf == name }) { return g.gguf }
        let prefix = "model.layers."
        guard name.hasPrefix(prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]), layer >= 0 else { return nil }
        let suffix = rest[rest.index(after: dot)...]
        return layerSuffixes.first { $0.hf == suffix }.map { "blk.\(layer).\($0.gguf)" }
    }

    /// The inverse of `ggufName(forHuggingFace:)`.
    public static func huggingFaceName(forGGUF name: String) -> String? {
        if let g = globalNames.first(where: { $0.gguf == name }) { return g.hf }
        let prefix = "blk."
        guard name.hasPrefix(prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]), layer >= 0 else { return nil }
        let suffix = rest[rest.index(after: dot)...]
        return layerSuffixes.first { $0.gguf == suffix }.map { "model.layers.\(layer).\($0.hf)" }
    }

    // MARK: Tokenizer and chat template

    /// The tokenizer from `tokenizer.json` (+ `tokenizer_config.json` for BOS/EOS), or an error saying why not.
    public func loadTokenizer() throws -> Tokenizer {
        try Tokenizer(huggingFaceDirectory: directory, config: config)
    }

    /// `chat_template` from `tokenizer_config.json`, if there is one.
    public func chatTemplateText() -> String? {
        let p = directory + "/tokenizer_config.json"
        guard MappedFile.exists(p), let c = try? MappedFile(path: p).json() else { return nil }
        return c["chat_template"]?.stringValue
    }
}
