#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Llama-family hyperparameters, from GGUF metadata (`<arch>.*` keys, arch from `general.architecture`), from an HF
/// `config.json` (`init(huggingFaceConfig:)`), or spelled out (dummy shapes). Missing or mistyped keys are reported by
/// name.
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
    /// Frequency-dependent RoPE scaling (Llama 3.1+); nil for plain RoPE.
    public var ropeScaling: RopeScaling?

    public init(architecture: String = "llama", blockCount: Int, embeddingLength: Int, feedForwardLength: Int,
                headCount: Int, headCountKV: Int, headDim: Int, contextLength: Int, vocabSize: Int,
                ropeFreqBase: Float, rmsNormEpsilon: Float, tiedEmbeddings: Bool, ropeScaling: RopeScaling? = nil) {
        self.architecture = architecture
        self.blockCount = blockCount
        self.embeddingLength = embeddingLength
        self.feedForwardLength = feedForwardLength
        self.headCount = headCount
        self.headCountKV = headCountKV
        self.headDim = headDim
        self.contextLength = contextLength
        self.vocabSize = vocabSize
        self.ropeFreqBase = ropeFreqBase
        self.rmsNormEpsilon = rmsNormEpsilon
        self.tiedEmbeddings = tiedEmbeddings
        self.ropeScaling = ropeScaling
    }

    /// Weights of one layer's linear projections: Q, K, V, output, gate, up, down (2 FLOPs each per token).
    public var projectionParametersPerLayer: Int {
        let q = headCount * headDim, kv = headCountKV * headDim, d = embeddingLength
        return d * (q + 2 * kv) + q * d + 3 * d * feedForwardLength
    }

    /// Every parameter of a model of this shape (the tensors `DummyWeights` generates): each layer's projections
    /// and two norms, the token embedding, the output head unless tied to it, the final norm.
    public var parameterCount: Int {
        let d = embeddingLength
        return blockCount * (projectionParametersPerLayer + 2 * d) + vocabSize * d * (tiedEmbeddings ? 1 : 2) + d
    }

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
        /// A float that must be finite and > 0 (NaN, ±inf, 0 and negatives would poison every activation).
        func positiveFloat(_ key: String) throws -> Float {
            let v = try file.double(key)
            guard v.isFinite, v > 0, Float(v).isFinite, Float(v) > 0 else {
                throw GGUFError.invalidValue(key: key, reason: "must be a finite number > 0, is \(v)")
            }
            return Float(v)
        }
        ropeFreqBase = file["\(arch).rope.freq_base"] == nil ? 10000 : try positiveFloat("\(arch).rope.freq_base")
        rmsNormEpsilon = try positiveFloat("\(arch).attention.layer_norm_rms_epsilon")
        guard contextLength <= Self.maxContextLength else {
            throw GGUFError.invalidValue(key: "\(arch).context_length",
                                         reason: "\(contextLength) is more than \(Self.maxContextLength) tokens")
        }
        tiedEmbeddings = file.tensorInfo(named: "output.weight") == nil
        // Llama-3.1 GGUFs carry their RoPE scaling as the `rope_freqs.weight` tensor, which the model applies.
        ropeScaling = nil
    }

    /// The longest `context_length` a file may claim (2^24 tokens; more is a corrupt or hostile file).
    public static let maxContextLength = 1 << 24

    /// Checks the hyperparameters against the tensors `file` really holds, so that a lying header is an error here
    /// rather than a huge allocation (a block count of 10^9) or a shape mismatch deep in a model: the blocks must be
    /// exactly `blk.0` … `blk.<block_count - 1>`, and the embedding, attention and FFN tensors of block 0 must have
    /// the shapes the dimensions imply. Tensors that are missing are left to the model to name.
    public func checkTensors(of file: GGUFFile) throws {
        let arch = architecture
        var blocks = Set<Int>()
        for t in file.tensors where t.name.hasPrefix("blk.") {
            if let n = Int(t.name.dropFirst(4).prefix { $0 != "." }), n >= 0 { blocks.insert(n) }
        }
        if blocks.count != blockCount || (blocks.max() ?? -1) != blockCount - 1 {
            let held = blocks.isEmpty ? "no blk.N tensors"
                : "tensors for \(blocks.count) blocks (blk.\(blocks.min()!) … blk.\(blocks.max()!))"
            throw GGUFError.invalidValue(key: "\(arch).block_count", reason: "is \(blockCount), but the file has \(held)")
        }
        func check(_ tensor: String, rows: Int, rowLength: Int, key: String) throws {
            guard let t = file.tensorInfo(named: tensor) else { return }
            guard t.rowCount == rows, t.rowLength == rowLength else {
                throw GGUFError.invalidValue(key: key, reason: "implies \(tensor) of \(rows) rows × \(rowLength), "
                                             + "but the file's is \(t.rowCount) × \(t.rowLength) (dims \(t.dims))")
            }
        }
        try check("token_embd.weight", rows: vocabSize, rowLength: embeddingLength,
                  key: "\(arch).embedding_length / vocab_size")
        try check("blk.0.attn_q.weight", rows: headCount * headDim, rowLength: embeddingLength,
                  key: "\(arch).attention.head_count")
        try check("blk.0.attn_k.weight", rows: headCountKV * headDim, rowLength: embeddingLength,
                  key: "\(arch).attention.head_count_kv")
        try check("blk.0.ffn_gate.weight", rows: feedForwardLength, rowLength: embeddingLength,
                  key: "\(arch).feed_forward_length")
    }

    /// θ_i = base^(-2i/d) for i in 0..<d/2, then the RoPE scaling if any: what the forward pass rotates pair i by
    /// (per position). One definition for every engine.
    public var ropeInverseFrequencies: [Float] {
        let d = headDim
        let plain = (0..<(d / 2)).map { i in Float(pow(Double(ropeFreqBase), -2.0 * Double(i) / Double(d))) }
        return ropeScaling.map { s in plain.map { s.apply(to: $0) } } ?? plain
    }
}

/// Llama 3.1's RoPE scaling (HF `rope_scaling: {"rope_type": "llama3", ...}`, transformers'
/// `_compute_llama3_parameters`): long wavelengths are slowed by `factor`, short ones kept, the band between
/// interpolated.
public struct RopeScaling: Sendable, Equatable {
    public var factor: Float
    public var lowFrequencyFactor: Float
    public var highFrequencyFactor: Float
    /// The context length the model was pre-trained at (`original_max_position_embeddings`).
    public var originalContextLength: Int

    public init(factor: Float, lowFrequencyFactor: Float, highFrequencyFactor: Float, originalContextLength: Int) {
        self.factor = factor
        self.lowFrequencyFactor = lowFrequencyFactor
        self.highFrequencyFactor = highFrequencyFactor
        self.originalContextLength = originalContextLength
    }

    /// The scaled inverse frequency for one unscaled `inverseFrequency`.
    public func apply(to inverseFrequency: Float) -> Float {
        let old = Double(originalContextLength)
        let lowWavelength = old / Double(lowFrequencyFactor), highWavelength = old / Double(highFrequencyFactor)
        let f = Double(inverseFrequency)
        let wavelength = 2 * Double.pi / f
        if wavelength < highWavelength { return inverseFrequency }
        if wavelength > lowWavelength { return Float(f / Double(factor)) }
        let smooth = (old / wavelength - Double(lowFrequencyFactor)) / Double(highFrequencyFactor - lowFrequencyFactor)
        return Float((1 - smooth) * f / Double(factor) + smooth * f)
    }
}
