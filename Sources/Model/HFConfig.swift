extension LlamaHyperparameters {
    /// From an HF `config.json` (transformers' `LlamaConfig`; Mistral-style configs without a sliding window too).
    /// Defaults are transformers': `num_key_value_heads` = `num_attention_heads`, `head_dim` = hidden / heads,
    /// `rope_theta` 10000, `rms_norm_eps` 1e-6, `tie_word_embeddings` false. Features the forward pass does not
    /// implement (biases, other activations, RoPE scalings other than Llama 3's) are errors naming the field.
    /// `path` is only for messages.
    public init(huggingFaceConfig config: JSONValue, path: String = "config.json") throws {
        func fail(_ field: String, _ reason: String) -> ModelFileError {
            ModelFileError(path: path, field: field, reason: reason)
        }
        guard config.objectValue != nil else { throw fail("config", "is a JSON \(config.kindName), not an object") }
        func int(_ key: String, default d: Int? = nil) throws -> Int {
            guard let v = config[key], !v.isNull else {
                if let d { return d }
                throw fail(key, "missing")
            }
            guard let i = v.intValue else { throw fail(key, "is a \(v.kindName) (\(v.doubleValue.map { "\($0)" } ?? "not a number")), expected a positive integer") }
            guard i > 0 else { throw fail(key, "must be positive, is \(i)") }
            return i
        }
        func number(_ key: String, default d: Double) throws -> Double {
            guard let v = config[key], !v.isNull else { return d }
            guard let x = v.doubleValue, x.isFinite else { throw fail(key, "is \(v.kindName), expected a number") }
            return x
        }
        func flag(_ key: String) throws -> Bool {
            guard let v = config[key], !v.isNull else { return false }
            guard let b = v.boolValue else { throw fail(key, "is \(v.kindName), expected true or false") }
            return b
        }

        let modelType = config["model_type"]?.stringValue ?? "llama"
        guard modelType == "llama" || modelType == "mistral" else {
            throw fail("model_type", "'\(modelType)' is not supported (llama, mistral)")
        }
        if let window = config["sliding_window"], !window.isNull {
            throw fail("sliding_window", "sliding-window attention is not implemented")
        }
        if let act = config["hidden_act"], act.stringValue != "silu" {
            throw fail("hidden_act", "'\(act.stringValue ?? act.kindName)' is not supported (silu)")
        }
        for key in ["attention_bias", "mlp_bias"] where try flag(key) {
            throw fail(key, "biases are not implemented")
        }

        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        let kvHeads = try int("num_key_value_heads", default: heads)
        guard heads % kvHeads == 0 else { throw fail("num_key_value_heads", "\(heads) heads not divisible by \(kvHeads)") }
        guard config["head_dim"] != nil || hidden % heads == 0 else {
            throw fail("num_attention_heads", "hidden_size \(hidden) not divisible by \(heads) heads")
        }
        let headDim = try int("head_dim", default: hidden / heads)
        guard headDim % 2 == 0 else { throw fail("head_dim", "\(headDim) is odd: RoPE rotates pairs") }

        var scaling: RopeScaling?
        if let rs = config["rope_scaling"], !rs.isNull {
            guard rs.objectValue != nil else { throw fail("rope_scaling", "is \(rs.kindName), expected an object") }
            let kind = rs["rope_type"]?.stringValue ?? rs["type"]?.stringValue ?? "?"
            switch kind {
            case "default":
                scaling = nil
            case "llama3":
                func field(_ k: String) throws -> Double {
                    guard let x = rs[k]?.doubleValue, x > 0 else { throw fail("rope_scaling.\(k)", "missing or not positive") }
                    return x
                }
                let low = try field("low_freq_factor"), high = try field("high_freq_factor")
                guard high > low else { throw fail("rope_scaling.high_freq_factor", "must exceed low_freq_factor") }
                scaling = RopeScaling(factor: Float(try field("factor")), lowFrequencyFactor: Float(low),
                                      highFrequencyFactor: Float(high),
                                      originalContextLength: Int(try field("original_max_position_embeddings")))
            default:
                throw fail("rope_scaling", "type '\(kind)' is not implemented (supported: llama3, default)")
            }
        }

        self.init(architecture: "llama", blockCount: try int("num_hidden_layers"), embeddingLength: hidden,
                  feedForwardLength: try int("intermediate_size"), headCount: heads, headCountKV: kvHeads,
                  headDim: headDim, contextLength: try int("max_position_embeddings", default: 2048),
                  vocabSize: try int("vocab_size"), ropeFreqBase: Float(try number("rope_theta", default: 10000)),
                  rmsNormEpsilon: Float(try number("rms_norm_eps", default: 1e-6)),
                  tiedEmbeddings: try flag("tie_word_embeddings"), ropeScaling: scaling)
    }
}
