extension Tokenizer {
    /// A byte-level BPE tokenizer from an HF model directory: `tokenizer.json` (`model.vocab`, `model.merges` as
    /// "a b" strings or ["a", "b"] pairs, `added_tokens` — special ones become control tokens, the others
    /// user-defined, as llama.cpp's converter does), the pre-tokenizer recognised from its structure, BOS/EOS from
    /// `tokenizer_config.json` or else `config` (the model's config.json).
    public convenience init(huggingFaceDirectory dir: String, config: JSONValue? = nil) throws {
        let path = dir + "/tokenizer.json"
        guard MappedFile.exists(path) else {
            throw ModelFileError(path: path, field: "file", reason: "missing: this model has no HF tokenizer")
        }
        let json = try MappedFile(path: path).json()
        let configPath = dir + "/tokenizer_config.json"
        let tokenizerConfig = MappedFile.exists(configPath) ? try MappedFile(path: configPath).json() : nil
        try self.init(tokenizerJSON: json, tokenizerConfig: tokenizerConfig, modelConfig: config, path: path)
    }

    /// From parsed `tokenizer.json` (and optionally `tokenizer_config.json` and config.json); `path` is for messages.
    public convenience init(tokenizerJSON json: JSONValue, tokenizerConfig: JSONValue? = nil,
                            modelConfig: JSONValue? = nil, path: String = "tokenizer.json") throws {
        func fail(_ field: String, _ reason: String) -> ModelFileError {
            ModelFileError(path: path, field: field, reason: reason)
        }
        guard let model = json["model"], model.objectValue != nil else { throw fail("model", "missing or not an object") }
        let type = model["type"]?.stringValue ?? "?"
        guard type == "BPE" else { throw fail("model.type", "'\(type)' is not supported (BPE)") }
        if let n = json["normalizer"], !n.isNull {
            throw fail("normalizer", "'\(n["type"]?.stringValue ?? n.kindName)' is not supported (byte-level BPE has none)")
        }
        let pre = try Self.preTokenizerKind(json["pre_tokenizer"] ?? .null, fail: fail)

        // Vocabulary: ids may leave gaps (filled with unused empty tokens); added tokens may extend it.
        guard let vocab = model["vocab"]?.objectValue else { throw fail("model.vocab", "missing or not an object") }
        var byID: [Int: (text: String, type: TokenType)] = [:]
        for (text, idValue) in vocab {
            guard let id = idValue.intValue, id >= 0, id < 1 << 24 else { throw fail("model.vocab.\(text)", "is not a token id") }
            byID[id] = (text, .normal)
        }
        for (n, added) in (json["added_tokens"]?.arrayValue ?? []).enumerated() {
            guard let id = added["id"]?.intValue, id >= 0, id < 1 << 24, let text = added["content"]?.stringValue else {
                throw fail("added_tokens[\(n)]", "needs an integer id and a string content")
            }
            byID[id] = (text, added["special"]?.boolValue == true ? .control : .userDefined)
        }
        let count = (byID.keys.max() ?? -1) + 1
        var tokens = [String](repeating: "", count: count), types = [TokenType](repeating: .unused, count: count)
        for (id, t) in byID { tokens[id] = t.text; types[id] = t.type }

        guard let mergeList = model["merges"]?.arrayValue else { throw fail("model.merges", "missing or not an array") }
        var merges: [String] = []
        merges.reserveCapacity(mergeList.count)
        for (n, m) in mergeList.enumerated() {
            if let s = m.stringValue {
                merges.append(s)
            } else if let pair = m.arrayValue, pair.count == 2, let a = pair[0].stringValue, let b = pair[1].stringValue {
                merges.append(a + " " + b)
            } else {
                throw fail("model.merges[\(n)]", "is neither \"a b\" nor [\"a\", \"b\"]")
            }
        }

        // Special ids: tokenizer_config.json names them by text; config.json gives ids.
        let ids = Dictionary(byID.map { ($0.value.text, TokenID($0.key)) }, uniquingKeysWith: min)
        func special(_ key: String) -> TokenID? {
            let v = tokenizerConfig?[key]
            if let text = v?.stringValue ?? v?["content"]?.stringValue, let id = ids[text] { return id }
            let c = modelConfig?[key + "_id"]
            if let i = c?.intValue ?? c?.arrayValue?.first?.intValue, i >= 0, i < count { return TokenID(i) }
            return nil
        }
        let unknown = model["unk_token"]?.stringValue.flatMap { ids[$0] }
        let addBOS = tokenizerConfig?["add_bos_token"]?.boolValue ?? (pre == .llama3)
        self.init(tokens: tokens, types: types, merges: merges, preTokenizer: pre, bos: special("bos_token"),
                  eos: special("eos_token"), pad: special("pad_token"), unknown: unknown, addBOS: addBOS)
    }

    /// The Llama-3 split regex as written in Llama-3 tokenizer.json files.
    static let llama3Pattern =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Recognises the three pre-tokenizers we implement by their HF structure:
    /// `ByteLevel(use_regex)` = GPT-2; `Digits(individual) + ByteLevel(use_regex)` = SmolLM; `Split(llama-3 regex) +
    /// ByteLevel(no regex)` = Llama 3.
    static func preTokenizerKind(_ value: JSONValue, fail: (String, String) -> ModelFileError) throws -> PreTokenizerKind {
        let steps = value["type"]?.stringValue == "Sequence" ? (value["pretokenizers"]?.arrayValue ?? []) : [value]
        let shape = steps.map { s -> String in
            let t = s["type"]?.stringValue ?? s.kindName
            switch t {
            case "ByteLevel":
                let prefix = s["add_prefix_space"]?.boolValue == true ? ",prefix" : ""
                return (s["use_regex"]?.boolValue ?? true ? "ByteLevel(regex" : "ByteLevel(noregex") + prefix + ")"
            case "Digits": return s["individual_digits"]?.boolValue == true ? "Digits(individual)" : "Digits"
            case "Split":
                return s["pattern"]?["Regex"]?.stringValue == llama3Pattern ? "Split(llama3)" : "Split(other)"
            default: return t
            }
        }
        switch shape {
        case ["ByteLevel(regex)"]: return .gpt2
        case ["Digits(individual)", "ByteLevel(regex)"]: return .smollm
        case ["Split(llama3)", "ByteLevel(noregex)"]: return .llama3
        default:
            throw fail("pre_tokenizer", "[\(shape.joined(separator: ", "))] is not supported "
                       + "(ByteLevel; Digits(individual) + ByteLevel; Split(llama-3 regex) + ByteLevel)")
        }
    }
}
