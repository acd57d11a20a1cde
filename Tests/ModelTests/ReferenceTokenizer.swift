@testable import Model

/// The tokenizer's encoding as it was before the heap BPE (issue 14): special-token partition, pre-tokenizer, then
/// the quadratic BPE that rescans every pair after each merge. Kept here, in the test target only, as the oracle of
/// the randomized differential test. `cap` adds the documented pre-token rule, written independently: a pre-token of
/// more than `cap` UTF-8 bytes is merged as consecutive chunks, each the most whole characters that fit in `cap`.
struct ReferenceTokenizer {
    var cap: Int?
    let tokenToID: [String: TokenID]
    let mergeRank: [String: Int]
    let specialTokens: [(id: TokenID, text: String, type: TokenType)]
    let preTokenizer: PreTokenizerKind
    let ignoreMerges: Bool
    let addBOS: Bool
    let bosID: TokenID?

    init(tokens: [String], types: [TokenType], merges: [String], preTokenizer: PreTokenizerKind, bos: TokenID?,
         addBOS: Bool) {
        var t2i: [String: TokenID] = [:]
        for (i, t) in tokens.enumerated() where t2i[t] == nil { t2i[t] = TokenID(i) }
        tokenToID = t2i
        var ranks: [String: Int] = [:]
        for (i, m) in merges.enumerated() where ranks[m] == nil { ranks[m] = i }
        mergeRank = ranks
        var special: [(id: TokenID, text: String, type: TokenType)] = []
        for (i, ty) in types.enumerated() where ty == .control || ty == .userDefined || ty == .unknown {
            if !tokens[i].isEmpty { special.append((TokenID(i), tokens[i], ty)) }
        }
        special.sort { a, b in
            let la = a.text.utf8.count, lb = b.text.utf8.count
            return la != lb ? la > lb : a.id < b.id
        }
        specialTokens = special
        self.preTokenizer = preTokenizer
        self.ignoreMerges = preTokenizer == .llama3
        self.addBOS = addBOS
        self.bosID = bos
    }

    func encode(_ text: String, addSpecial: Bool = false, parseSpecial: Bool = false) -> [TokenID] {
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

    func partition(_ text: String, parseSpecial: Bool) -> [Fragment] {
        var frags: [Fragment] = [.text(Array(text.utf8)[...])]
        for sp in specialTokens {
            if !parseSpecial && (sp.type == .control || sp.type == .unknown) { continue }
            let pat = Array(sp.text.utf8)
            var next: [Fragment] = []
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

    func encodeRaw(_ text: ArraySlice<UInt8>, into out: inout [TokenID]) {
        for word in preTokenizer.split(String(decoding: text, as: UTF8.self)) {
            guard let cap, word.utf8.count > cap else {
                encodeWord(word, into: &out)
                continue
            }
            var chunk = String.UnicodeScalarView()
            var bytes = 0
            for c in word.unicodeScalars {
                let n = String(c).utf8.count
                if bytes + n > cap {
                    encodeWord(String(chunk), into: &out, lookUpWhole: false)
                    chunk = String.UnicodeScalarView()
                    bytes = 0
                }
                chunk.append(c)
                bytes += n
            }
            encodeWord(String(chunk), into: &out, lookUpWhole: false)
        }
    }

    func encodeWord(_ word: String, into out: inout [TokenID], lookUpWhole: Bool = true) {
        let encoded = ByteLevel.encode(word.utf8)
        if ignoreMerges && lookUpWhole, let id = tokenToID[encoded] {
            out.append(id)
            return
        }
        for piece in bpe(encoded) {
            if let id = tokenToID[piece] {
                out.append(id)
            } else {
                for scalar in piece.unicodeScalars {
                    if let id = tokenToID[String(scalar)] { out.append(id) }
                }
            }
        }
    }

    /// Repeatedly merges the adjacent pair of lowest rank (leftmost on ties), rescanning all pairs each time.
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

    private func rank(_ a: String, _ b: String) -> Int { mergeRank[a + " " + b] ?? Int.max }
}
