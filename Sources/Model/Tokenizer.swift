public typealias TokenID = Int32

/// llama.cpp / GGUF token types (`tokenizer.ggml.token_type`).
public enum TokenType: Int32, Sendable {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

public enum TokenizerError: Error, Equatable, Sendable, CustomStringConvertible {
    case unsupportedModel(String)
    case unsupportedPreTokenizer(String)
    case badMetadata(key: String, reason: String)

    public var description: String {
        switch self {
        case .unsupportedModel(let m):
            return "tokenizer: tokenizer.ggml.model '\(m)' is not supported (only 'gpt2' byte-level BPE)"
        case .unsupportedPreTokenizer(let p):
            return "tokenizer: tokenizer.ggml.pre '\(p)' is not supported (supported: smollm, llama-bpe/llama3, gpt2/default)"
        case let .badMetadata(key, reason):
            return "tokenizer: metadata '\(key)': \(reason)"
        }
    }
}

/// GPT-2 byte ↔ unicode mapping used by byte-level BPE vocabularies.
public enum ByteLevel {
    /// byte → the scalar that stands for it in vocabulary strings.
    public static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)
            if printable {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(256 + n)!
                n += 1
            }
        }
        return table
    }()

    /// scalar value → byte (inverse of `byteToScalar`).
    public static let scalarToByte: [UInt32: UInt8] = {
        var d: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { d[s.value] = UInt8(b) }
        return d
    }()

    /// UTF-8 bytes → vocabulary string.
    public static func encode<S: Sequence<UInt8>>(_ bytes: S) -> String {
        var v = String.UnicodeScalarView()
        for b in bytes { v.append(byteToScalar[Int(b)]) }
        return String(v)
    }

    /// Vocabulary string → bytes (scalars outside the table are kept as their UTF-8).
    public static func decode(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        for sc in s.unicodeScalars {
            if let b = scalarToByte[sc.value] {
                out.append(b)
            } else {
                out.append(contentsOf: String(sc).utf8)
            }
        }
        return out
    }
}

/// Byte-level BPE tokenizer built from GGUF metadata, following llama.cpp's BPE tokenizer.
public final class Tokenizer: Sendable {
    public let tokens: [String]
    public let tokenTypes: [TokenType]
    public let preTokenizer: PreTokenizerKind
    public let bosID: TokenID?
    public let eosID: TokenID?
    public let padID: TokenID?
    public let unknownID: TokenID?
    /// `tokenizer.ggml.add_bos_token` (llama-bpe defaults to true, others to false).
    public let addBOS: Bool
    /// llama.cpp's `ignore_merges` (a word found whole in the vocabulary is one token): set for llama-bpe.
    public let ignoreMerges: Bool

    private let tokenToID: [String: TokenID]
    private let mergeRank: [String: Int]
    /// Control, user-defined and unknown tokens, longest text first.
    private let specialTokens: [(id: TokenID, text: String, type: TokenType)]

    public var vocabularySize: Int { tokens.count }

    public convenience init(file: GGUFFile) throws {
        let model = try file.string("tokenizer.ggml.model")
        guard model == "gpt2" else { throw TokenizerError.unsupportedModel(model) }
        let preName = file["tokenizer.ggml.pre"]?.stringValue
        guard let pre = PreTokenizerKind(ggmlPre: preName) else {
            throw TokenizerError.unsupportedPreTokenizer(preName ?? "")
        }
        let tokens = try file.stringArray("tokenizer.ggml.tokens")
        let merges = try file.stringArray("tokenizer.ggml.merges")
        var types: [TokenType]
        if file["tokenizer.ggml.token_type"] != nil {
            let raw = try file.intArray("tokenizer.ggml.token_type")
            guard raw.count == tokens.count else {
                throw TokenizerError.badMetadata(key: "tokenizer.ggml.token_type",
                                                 reason: "\(raw.count) entries for \(tokens.count) tokens")
            }
            types = raw.map { TokenType(rawValue: Int32(truncatingIfNeeded: $0)) ?? .normal }
        } else {
            types = Array(repeating: .normal, count: tokens.count)
        }
        func optID(_ key: String) throws -> TokenID? {
            guard file[key] != nil else { return nil }
            let v = try file.int(key)
            guard v >= 0 && v < tokens.count else {
                throw TokenizerError.badMetadata(key: key, reason: "token id \(v) outside vocabulary of \(tokens.count)")
            }
            return TokenID(v)
        }
        let addBOS = try file["tokenizer.ggml.add_bos_token"] == nil ? pre == .llama3 : file.bool("tokenizer.ggml.add_bos_token")
        self.init(tokens: tokens, types: types, merges: merges, preTokenizer: pre,
                  bos: try optID("tokenizer.ggml.bos_token_id"), eos: try optID("tokenizer.ggml.eos_token_id"),
                  pad: try optID("tokenizer.ggml.padding_token_id"), unknown: try optID("tokenizer.ggml.unknown_token_id"),
                  addBOS: addBOS)
    }

    public init(tokens: [String], types: [TokenType], merges: [String], preTokenizer: PreTokenizerKind,
                bos: TokenID?, eos: TokenID?, pad: TokenID?, unknown: TokenID?, addBOS: Bool) {
        precondition(types.count == tokens.count)
        self.tokens = tokens
        self.tokenTypes = types
        self.preTokenizer = preTokenizer
        self.bosID = bos
        self.eosID = eos
        self.padID = pad
        self.unknownID = unknown
        self.addBOS = addBOS
        self.ignoreMerges = preTokenizer == .llama3
        var t2i: [String: TokenID] = [:]
        t2i.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where t2i[t] == nil { t2i[t] = TokenID(i) }
        self.tokenToID = t2i
        var ranks: [String: Int] = [:]
        ranks.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() where ranks[m] == nil { ranks[m] = i }
        self.mergeRank = ranks
        var special: [(id: TokenID, text: String, type: TokenType)] = []
        for (i, ty) in types.enumerated() where ty == .control || ty == .userDefined || ty == .unknown {
            if !tokens[i].isEmpty { special.append((TokenID(i), tokens[i], ty)) }
        }
        special.sort { a, b in
            let la = a.text.utf8.count, lb = b.text.utf8.count
            return la != lb ? la > lb : a.id < b.id
        }
        self.specialTokens = special
    }

    /// The id of a token given its vocabulary text, e.g. `"<|im_end|>"`.
    public func id(of text: String) -> TokenID? { tokenToID[text] }

    public func type(of id: TokenID) -> TokenType { tokenTypes[Int(id)] }

    /// True for control and unknown tokens (llama.cpp's "special" attribute for rendering).
    public func isSpecial(_ id: TokenID) -> Bool {
        let t = tokenTypes[Int(id)]
        return t == .control || t == .unknown
    }

    // MARK: Encoding

    /// Tokenizes `text`. `addSpecial` prepends BOS when the model asks for it (`addBOS`);
    /// `parseSpecial` recognises control tokens such as `<|im_start|>` written in the text
    /// (user-defined tokens are always recognised, as in llama.cpp).
    public func encode(_ text: String, addSpecial: Bool = false, parseSpecial: Bool = false) -> [TokenID] {
        var out: [TokenID] = []
        if addSpecial && addBOS, let b = bosID { out.append(b) }
        for frag in partition(text, parseSpecial: parseSpecial) {
            switch frag {
            case .token(let id): out.append(id)
            case .text(let s): encodeRaw(s, into: &out)
            }
        }
        return out
    }

    enum Fragment { case text(ArraySlice<UInt8>), token(TokenID) }

    /// Splits text at occurrences of special tokens (longest tokens first, like tokenizer_st_partition).
    func partition(_ text: String, parseSpecial: Bool) -> [Fragment] {
        var frags: [Fragment] = [.text(Array(text.utf8)[...])]
        for sp in specialTokens {
            if !parseSpecial && (sp.type == .control || sp.type == .unknown) { continue }
            let pat = Array(sp.text.utf8)
            var next: [Fragment] = []
            next.reserveCapacity(frags.count)
            for f in frags {
                guard case .text(let s) = f, s.count >= pat.count else { next.append(f); continue }
                var start = s.startIndex
                var i = s.startIndex
                while i <= s.endIndex - pat.count {
                    if s[i] == pat[0] && s[i..<(i + pat.count)].elementsEqual(pat) {
                        if start < i { next.append(.text(s[start..<i])) }
                        next.append(.token(sp.id))
                        i += pat.count
                        start = i
                    } else {
                        i += 1
                    }
                }
                if start < s.endIndex { next.append(.text(s[start...])) }
            }
            frags = next
        }
        return frags
    }

    /// BPE-encodes raw text (no special-token handling) and appends ids to `out`.
    func encodeRaw(_ text: ArraySlice<UInt8>, into out: inout [TokenID]) {
        for word in preTokenizer.split(String(decoding: text, as: UTF8.self)) {
            let encoded = ByteLevel.encode(word.utf8)
            if ignoreMerges, let id = tokenToID[encoded] {
                out.append(id)
                continue
            }
            for piece in bpe(encoded) {
                if let id = tokenToID[piece] {
                    out.append(id)
                } else {
                    // Fallback as in llama.cpp: one token per byte of the piece, if such tokens exist.
                    for b in piece.utf8 {
                        if let id = tokenToID[String(decoding: [b], as: UTF8.self)] { out.append(id) }
                    }
                }
            }
        }
    }

    /// Applies merges to one byte-encoded word: repeatedly merges the adjacent pair of lowest
    /// rank (leftmost on ties) until no pair has a rank.
    func bpe(_ word: String) -> [String] {
        var syms: [String] = word.unicodeScalars.map { String($0) }
        if syms.count < 2 { return syms }
        var ranks: [Int] = (0..<(syms.count - 1)).map { rank(syms[$0], syms[$0 + 1]) }
        while true {
            var best = Int.max, at = -1
            for (i, r) in ranks.enumerated() where r < best { best = r; at = i }
            if at < 0 { break }
            syms[at] += syms[at + 1]
            syms.remove(at: at + 1)
            ranks.remove(at: at)
            if at > 0 { ranks[at - 1] = rank(syms[at - 1], syms[at]) }
            if at < syms.count - 1 { ranks[at] = rank(syms[at], syms[at + 1]) }
        }
        return syms
    }

    @inline(__always)
    private func rank(_ a: String, _ b: String) -> Int {
        mergeRank[a + " " + b] ?? Int.max
    }

    // MARK: Decoding

    /// The bytes a token stands for. Control/unknown tokens give their text only when `renderSpecial`.
    public func tokenBytes(_ id: TokenID, renderSpecial: Bool = true) -> [UInt8] {
        guard id >= 0 && Int(id) < tokens.count else { return [] }
        let text = tokens[Int(id)]
        switch tokenTypes[Int(id)] {
        case .control, .unknown:
            return renderSpecial ? Array(text.utf8) : []
        case .userDefined:
            return Array(text.utf8)
        case .byte:
            // "<0xAB>"
            let u = Array(text.utf8)
            if u.count == 6, let v = UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16) { return [v] }
            return Array(text.utf8)
        case .unused:
            return []
        case .normal, .undefined:
            return ByteLevel.decode(text)
        }
    }

    /// Decodes ids to text (invalid UTF-8 is repaired with U+FFFD).
    public func decode(_ ids: [TokenID], renderSpecial: Bool = true) -> String {
        var bytes: [UInt8] = []
        for id in ids { bytes.append(contentsOf: tokenBytes(id, renderSpecial: renderSpecial)) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
