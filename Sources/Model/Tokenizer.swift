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
    /// BPE over interned symbols (see `bpe(_:symbols:heap:into:)`): a symbol is a string a merge can produce or consume. Ids below
    /// `tokens.count` are vocabulary ids (the first id of each text, like `tokenToID`); ids from `tokens.count` on
    /// stand for strings outside the vocabulary (`extraSymbols`), which are spelled out byte by byte on output
    /// (`bpe`'s fallback).
    private let byteSymbol: [Int32]
    private let extraSymbols: [String]
    /// (left symbol << 32 | right symbol) → the merge's rank (its index in the merges list) and result symbol.
    private let pairMerges: [UInt64: PairMerge]
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
                bos: TokenID?, eos: TokenID?, pad: TokenID?, unknown: TokenID?, addBOS: Bool,
                maxPreTokenBytes: Int = Tokenizer.defaultMaxPreTokenBytes) {
        precondition(types.count == tokens.count)
        precondition(maxPreTokenBytes >= 4, "a chunk must hold a UTF-8 character")
        self.maxPreTokenBytes = maxPreTokenBytes
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
        // Intern every string the merges can see: the 256 byte scalars, each merge's two sides and its result.
        var interned = t2i
        var extra: [String] = []
        func intern(_ s: String) -> Int32 {
            if let id = interned[s] { return id }
            let id = TokenID(tokens.count + extra.count)
            interned[s] = id
            extra.append(s)
            return id
        }
        self.byteSymbol = ByteLevel.byteToScalar.map { intern(String($0)) }
        var pairs: [UInt64: PairMerge] = [:]
        pairs.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() {
            // Symbols never contain U+0020 (byte-level text spells the space Ġ), so only "left right" with one
            // space and two non-empty sides can ever match a pair.
            let u = m.utf8
            guard let sp = u.firstIndex(of: 0x20), sp != u.startIndex, u.index(after: sp) != u.endIndex,
                  !u[u.index(after: sp)...].contains(0x20) else { continue }
            let a = String(m[..<sp]), b = String(m[m.index(after: sp)...])
            let key = UInt64(UInt32(bitPattern: intern(a))) << 32 | UInt64(UInt32(bitPattern: intern(b)))
            if pairs[key] == nil { pairs[key] = PairMerge(rank: Int32(i), result: intern(a + b)) }
        }
        self.pairMerges = pairs
        self.extraSymbols = extra
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
        encode(segments: [TextSegment(text, parseSpecial: parseSpecial)], addSpecial: addSpecial)
    }

    /// Tokenizes the concatenation of `segments`, recognising control tokens only where they lie wholly inside a
    /// segment that has `parseSpecial` (a chat template's markup), never in the others (message content, which
    /// stays text however it is spelled). Between recognised special tokens the text is pre-tokenized as one
    /// piece across segment boundaries, so when no control-token text sits in a plain segment the ids are exactly
    /// those of `encode(joined, parseSpecial: true)`.
    public func encode(segments: [TextSegment], addSpecial: Bool = false) -> [TokenID] {
        var out: [TokenID] = []
        if addSpecial && addBOS, let b = bosID { out.append(b) }
        var bytes: [UInt8] = []
        var controlRanges: [Range<Int>] = []
        for seg in segments {
            let start = bytes.count
            bytes.append(contentsOf: seg.text.utf8)
            guard seg.parseSpecial && bytes.count > start else { continue }
            if let last = controlRanges.last, last.upperBound == start {
                controlRanges[controlRanges.count - 1] = last.lowerBound..<bytes.count
            } else {
                controlRanges.append(start..<bytes.count)
            }
        }
        for frag in partition(bytes, controlRanges: controlRanges) {
            switch frag {
            case .token(let id): out.append(id)
            case .text(let s): encodeRaw(s, into: &out)
            }
        }
        return out
    }

    enum Fragment { case text(ArraySlice<UInt8>), token(TokenID) }

    /// Splits text at occurrences of special tokens (longest tokens first, like tokenizer_st_partition). Control
    /// and unknown tokens count only inside one of `controlRanges` (sorted, disjoint); user-defined ones anywhere.
    func partition(_ bytes: [UInt8], controlRanges: [Range<Int>]) -> [Fragment] {
        var frags: [Fragment] = [.text(bytes[...])]
        func allowed(_ match: Range<Int>) -> Bool {
            // The last range starting at or before the match must contain it.
            var lo = 0, hi = controlRanges.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if controlRanges[mid].lowerBound <= match.lowerBound { lo = mid + 1 } else { hi = mid }
            }
            return lo > 0 && controlRanges[lo - 1].upperBound >= match.upperBound
        }
        for sp in specialTokens {
            let onlyInRanges = sp.type == .control || sp.type == .unknown
            if onlyInRanges && controlRanges.isEmpty { continue }
            let pat = Array(sp.text.utf8)
            var next: [Fragment] = []
            next.reserveCapacity(frags.count)
            for f in frags {
                guard case .text(let s) = f, s.count >= pat.count else { next.append(f); continue }
                var start = s.startIndex
                var i = s.startIndex
                while i <= s.endIndex - pat.count {
                    if s[i] == pat[0] && s[i..<(i + pat.count)].elementsEqual(pat)
                        && (!onlyInRanges || allowed(i..<(i + pat.count))) {
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

    /// The default longest pre-token BPE sees whole, in bytes. A longer one (only pathological input has them: a
    /// run of 25,000 letters, punctuation or white space with nothing to split it) is cut into chunks of at most
    /// this many bytes, each ending on a UTF-8 character boundary, and each chunk is merged on its own (and never
    /// looked up whole, for `ignoreMerges`); its ids then differ from unbounded BPE at most around the cuts.
    /// Pre-tokens up to this length get exactly the ids they always had.
    /// HF tokenizers and llama.cpp merge any length (their BPE is O(n log n) like ours, with no cap); the cap
    /// follows Meta's reference Llama-3 tokenizer, which splits runs of more than 25,000 consecutive non-white
    /// (or white) characters before BPE (tiktoken issue #195), and bounds the merge's memory per pre-token.
    public static let defaultMaxPreTokenBytes = 25_000

    /// This tokenizer's cap on a pre-token merged whole (`defaultMaxPreTokenBytes` unless the initializer says).
    public let maxPreTokenBytes: Int

    /// BPE-encodes raw text (no special-token handling) and appends ids to `out`.
    func encodeRaw(_ text: ArraySlice<UInt8>, into out: inout [TokenID]) {
        var heap = MergeHeap()
        var symbols: [BPESymbol] = []
        for word in preTokenizer.split(String(decoding: text, as: UTF8.self)) {
            var bytes = Array(word.utf8)[...]
            if ignoreMerges && bytes.count <= maxPreTokenBytes, let id = tokenToID[ByteLevel.encode(bytes)] {
                out.append(id)
                continue
            }
            while !bytes.isEmpty {
                var cut = bytes.endIndex
                if bytes.count > maxPreTokenBytes {
                    cut = bytes.index(bytes.startIndex, offsetBy: maxPreTokenBytes)
                    while cut > bytes.startIndex && bytes[cut] & 0xC0 == 0x80 { bytes.formIndex(before: &cut) }
                    if cut == bytes.startIndex { cut = bytes.index(bytes.startIndex, offsetBy: maxPreTokenBytes) }
                }
                bpe(bytes[..<cut], symbols: &symbols, heap: &heap, into: &out)
                bytes = bytes[cut...]
            }
        }
    }

    /// Applies the merges to one pre-token (its UTF-8 bytes) and appends the ids: repeatedly merges the adjacent
    /// pair of lowest rank, leftmost on ties, until no adjacent pair has a merge.
    ///
    /// O(n log n) as in llama.cpp's `llm_tokenizer_bpe_session` and HF tokenizers' `Word::merge_all`: the symbols
    /// are a doubly linked list over an array, and every adjacent pair with a merge sits in a binary min-heap keyed
    /// by (rank, position of its left symbol). A merge pushes the two pairs it creates; entries made stale by an
    /// earlier merge (a side gone or grown) are dropped when popped. Positions keep the list's order and a pair's
    /// text fixes its rank, so the pair popped is the one the rescan-every-pair loop would pick: same output.
    func bpe<C: Collection<UInt8>>(_ word: C, symbols: inout [BPESymbol], heap: inout MergeHeap,
                                   into out: inout [TokenID]) {
        symbols.removeAll(keepingCapacity: true)
        for b in word {
            let i = Int32(symbols.count)
            symbols.append(BPESymbol(id: byteSymbol[Int(b)], prev: i - 1, next: i + 1))
        }
        guard !symbols.isEmpty else { return }
        symbols[symbols.count - 1].next = -1
        heap.removeAll()
        func consider(_ left: Int32, _ right: Int32) {
            guard left >= 0, right >= 0 else { return }
            let l = symbols[Int(left)].id, r = symbols[Int(right)].id
            guard let m = pairMerges[UInt64(UInt32(bitPattern: l)) << 32 | UInt64(UInt32(bitPattern: r))] else { return }
            heap.push(MergeCandidate(rank: m.rank, left: left, right: right, leftID: l, rightID: r, result: m.result))
        }
        for i in 0..<(symbols.count - 1) { consider(Int32(i), Int32(i + 1)) }
        while let c = heap.pop() {
            let l = Int(c.left), r = Int(c.right)
            // Stale: the left symbol grew or died, or its right neighbour is no longer the one paired.
            guard symbols[l].id == c.leftID, symbols[l].next == c.right, symbols[r].id == c.rightID else { continue }
            symbols[l].id = c.result
            let after = symbols[r].next
            symbols[l].next = after
            if after >= 0 { symbols[Int(after)].prev = c.left }
            symbols[r].id = -1
            consider(symbols[l].prev, c.left)
            consider(c.left, after)
        }
        var i: Int32 = 0
        while i >= 0 {
            let id = symbols[Int(i)].id
            if Int(id) < tokens.count {
                out.append(id)
            } else {
                // Not in the vocabulary: one token per byte of the piece. Each byte-level character stands for
                // one byte (llama.cpp looks up the UTF-8 bytes of the spelling instead, and so drops every byte
                // spelled with a character above U+007F); failing that, the byte's <0xXX> token.
                for scalar in extraSymbols[Int(id) - tokens.count].unicodeScalars {
                    if let t = tokenToID[String(scalar)] ?? byteToken(forByteLevel: scalar) { out.append(t) }
                }
            }
            i = symbols[Int(i)].next
        }
    }

    /// False for a byte no token can stand for (no byte-level character and no `<0xXX>` token in the vocabulary):
    /// encoding drops it, as llama.cpp and HF tokenizers do. SmolLM2 lacks six ASCII control characters
    /// (U+0004, U+0006, U+0013, U+0014, U+0016, U+001D) and bytes that valid UTF-8 never or rarely uses.
    func hasToken(forByte b: UInt8) -> Bool {
        let scalar = ByteLevel.byteToScalar[Int(b)]
        return tokenToID[String(scalar)] != nil || byteToken(forByteLevel: scalar) != nil
    }

    /// The `<0xXX>` token of the byte a byte-level character spells, if the vocabulary has one.
    private func byteToken(forByteLevel scalar: Unicode.Scalar) -> TokenID? {
        guard let b = ByteLevel.scalarToByte[scalar.value] else { return nil }
        let hex = String(b, radix: 16, uppercase: true)
        return tokenToID["<0x" + (hex.count == 1 ? "0" + hex : hex) + ">"]
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

struct PairMerge {
    var rank: Int32
    var result: Int32
}

/// One symbol of a word being merged: an interned id (-1 once merged into its left neighbour) and list links.
struct BPESymbol {
    var id: Int32
    var prev: Int32
    var next: Int32
}

/// A possible merge of the adjacent symbols `left` and `right` as they were when it was pushed.
struct MergeCandidate {
    var rank: Int32
    var left: Int32
    var right: Int32
    var leftID: Int32
    var rightID: Int32
    var result: Int32

    @inline(__always)
    static func < (a: MergeCandidate, b: MergeCandidate) -> Bool {
        a.rank != b.rank ? a.rank < b.rank : a.left < b.left
    }
}

/// A binary min-heap of merge candidates ordered by (rank, left position).
struct MergeHeap {
    private var items: [MergeCandidate] = []

    mutating func removeAll() { items.removeAll(keepingCapacity: true) }

    mutating func push(_ c: MergeCandidate) {
        items.append(c)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i] < items[parent] else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> MergeCandidate? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            let n = items.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && items[l] < items[m] { m = l }
                if r < n && items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

/// Text to tokenize, and whether control tokens written in it are recognised (see `Tokenizer.encode(segments:)`).
public struct TextSegment: Sendable, Equatable {
    public var text: String
    public var parseSpecial: Bool
    public init(_ text: String, parseSpecial: Bool) {
        self.text = text
        self.parseSpecial = parseSpecial
    }
    /// A chat template's own text: its control tokens are control tokens.
    public static func markup(_ s: String) -> TextSegment { TextSegment(s, parseSpecial: true) }
    /// Text from a user (message content, a role name): always plain text.
    public static func content(_ s: String) -> TextSegment { TextSegment(s, parseSpecial: false) }
}
