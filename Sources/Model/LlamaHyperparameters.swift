/// Llama-family hyperparameters read from GGUF metadata (`<arch>.*` keys, arch from
/// `general.architecture`). Missing or mistyped keys are reported by name.
public struct LlamaHyperparameters: Sendable, Equatable {
    public var architecture: String
    public var blockCount: Int
    public var embeddingLength: Int
    public var feedForwardLength: Int
    public var headCount: Int
    public var headCountKV: Int
    public var headDim: Int
    public var contextLength: Int
    public var vocabSize: Int
    public var ropeFreqBase: Float
    public var rmsNormEpsilon: Float
    /// True when there is no separate `output.weight` (output projection shares `token_embd.weight`).
    public var tiedEmbeddings: Bool

    public init(file: GGUFFile) throws {
        let arch = try file.string("general.architecture")
        architecture = arch
        func positive(_ key: String) throws -> Int {
            let v = try file.int(key)
            guard v > 0 else { throw GGUFError.invalidValue(key: key, reason: "must be positive, is \(v)") }
            return v
        }
        blockCount = try positive("\(arch).block_count")
        embeddingLength = try positive("\(arch).embedding_length")
        feedForwardLength = try positive("\(arch).feed_forward_length")
        headCount = try positive("\(arch).attention.head_count")
        headCountKV = file["\(arch).attention.head_count_kv"] == nil
            ? headCount : try positive("\(arch).attention.head_count_kv")
        contextLength = try positive("\(arch).context_length")
        guard embeddingLength % headCount == 0 else {
            throw GGUFError.invalidValue(key: "\(arch).attention.head_count",
                                         reason: "embedding length \(embeddingLength) not divisible by \(headCount) heads")
        }
        guard headCount % headCountKV == 0 else {
            throw GGUFError.invalidValue(key: "\(arch).attention.head_count_kv",
                                         reason: "\(headCount) heads not divisible by \(headCountKV) KV heads")
        }
        headDim = embeddingLength / headCount
        if file["\(arch).vocab_size"] != nil {
            vocabSize = try positive("\(arch).vocab_size")
        } else if let toks = file["tokenizer.ggml.tokens"]?.arrayValue {
            vocabSize = toks.count
        } else {
            throw GGUFError.missingKey("\(arch).vocab_size")
        }
        ropeFreqBase = file["\(arch).rope.freq_base"] == nil ? 10000 : Float(try file.double("\(arch).rope.freq_base"))
        rmsNormEpsilon = Float(try file.double("\(arch).attention.layer_norm_rms_epsilon"))
        tiedEmbeddings = file.tensorInfo(named: "output.weight") == nil
    }
}
