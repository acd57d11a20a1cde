/// Pre-tokenizer (text → words before BPE), hand-written to match llama.cpp's behaviour
/// (`unicode_regex_split` with its custom GPT-2 / Llama-3 splitters) for the supported
/// `tokenizer.ggml.pre` types.
public enum PreTokenizerKind: String, Sendable, CaseIterable {
    /// `\p{N}` (each digit alone), then the GPT-2 regex. Also starcoder/refact/command-r/codeshell.
    case smollm
    /// The Llama-3 regex (`llama-bpe`, `llama3`, `llama-v3`).
    case llama3
    /// The GPT-2 regex (`gpt2`, `default`, and an absent `tokenizer.ggml.pre`).
    case gpt2

    /// Maps a `tokenizer.ggml.pre` value; nil if not supported.
    public init?(ggmlPre: String?) {
        switch ggmlPre {
        case nil, "default", "gpt2", "mpt", "olmo", "jais": self = .gpt2
        case "smollm", "starcoder", "refact", "command-r", "codeshell": self = .smollm
        case "llama3", "llama-v3", "llama-bpe": self = .llama3
        default: return nil
        }
    }

    /// Splits `text` into words (as arrays of Unicode scalars).
    public func split(_ text: String) -> [String] {
        let cpts = Array(text.unicodeScalars)
        // Each code point's classes once: the splitters look at most of them several times (non-ASCII lookups cost).
        let classes = cpts.map(PreTokenizerKind.flags)
        var segments: [Range<Int>] = [0..<cpts.count]
        switch self {
        case .smollm:
            segments = PreTokenizerKind.splitEachNumber(classes, segments)
            segments = PreTokenizerKind.gpt2Split(cpts, classes, segments)
        case .gpt2:
            segments = PreTokenizerKind.gpt2Split(cpts, classes, segments)
        case .llama3:
            segments = PreTokenizerKind.llama3Split(cpts, classes, segments)
        }
        return segments.map { r in
            var s = String.UnicodeScalarView()
            s.append(contentsOf: cpts[r])
            return String(s)
        }
    }

    // MARK: character classes (llama.cpp unicode_cpt_flags)

    struct Flags {
        var letter = false, number = false, whitespace = false, defined = false
        /// llama.cpp's `flags.as_uint() != 0`: any category known (unassigned code points have none).
        var any: Bool { defined || whitespace }
    }

    @inline(__always)
    static func flags(_ c: Unicode.Scalar) -> Flags {
        var f = Flags()
        let v = c.value
        if v < 0x80 {
            // Fast ASCII path.
            let b = UInt8(v)
            f.letter = (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
            f.number = b >= 0x30 && b <= 0x39
            f.whitespace = b == 0x20 || (b >= 0x09 && b <= 0x0d)
            f.defined = true
            return f
        }
        let p = c.properties
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            f.letter = true
        case .decimalNumber, .letterNumber, .otherNumber:
            f.number = true
        default: break
        }
        f.defined = p.generalCategory != .unassigned
        f.whitespace = p.isWhitespace
        return f
    }

    // MARK: splitters

    /// `\p{N}` as a std::regex split: every number code point is its own piece; runs between are pieces.
    static func splitEachNumber(_ classes: [Flags], _ segments: [Range<Int>]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        for seg in segments {
            var start = seg.lowerBound
            for i in seg where classes[i].number {
                if i > start { out.append(start..<i) }
                out.append(i..<(i + 1))
                start = i + 1
            }
            if start < seg.upperBound { out.append(start..<seg.upperBound) }
        }
        return out
    }

    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    static func gpt2Split(_ cpts: [Unicode.Scalar], _ classes: [Flags], _ segments: [Range<Int>]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(cpts.count / 3 + 1)
        for seg in segments {
            let ini = seg.lowerBound, end = seg.upperBound
            let OOR: UInt32 = 0xFFFF_FFFF
            func cpt(_ p: Int) -> UInt32 { (p >= ini && p < end) ? cpts[p].value : OOR }
            func fl(_ p: Int) -> Flags { (p >= ini && p < end) ? classes[p] : Flags() }
            var prevEnd = ini
            func add(_ e: Int) -> Int {
                let len = e - prevEnd
                if len > 0 { out.append(prevEnd..<e) }
                prevEnd = e
                return len
            }
            var pos = ini
            while pos < end {
                let c = cpt(pos)
                let f = fl(pos)
                if c == 0x27 && pos + 1 < end {  // '
                    let n = cpt(pos + 1)
                    if n == 0x73 || n == 0x74 || n == 0x6d || n == 0x64 {  // s t m d
                        pos += add(pos + 2)
                        continue
                    }
                    if pos + 2 < end {
                        let nn = cpt(pos + 2)
                        if (n == 0x72 && nn == 0x65) || (n == 0x76 && nn == 0x65) || (n == 0x6c && nn == 0x6c) {
                            pos += add(pos + 3)
                            continue
                        }
                    }
                }
                var f2 = c == 0x20 ? fl(pos + 1) : f
                if f2.letter {
                    if c == 0x20 { pos += 1 }
                    while f2.letter { pos += 1; f2 = fl(pos) }
                    _ = add(pos)
                    continue
                }
                if f2.number {
                    if c == 0x20 { pos += 1 }
                    while f2.number { pos += 1; f2 = fl(pos) }
                    _ = add(pos)
                    continue
                }
                if !(f2.whitespace || f2.letter || f2.number) && f2.any {
                    if c == 0x20 { pos += 1 }
                    while !(f2.whitespace || f2.letter || f2.number) && f2.any { pos += 1; f2 = fl(pos) }
                    _ = add(pos)
                    continue
                }
                var nws = 0
                while fl(pos + nws).whitespace { nws += 1 }
                if nws > 1 && cpt(pos + nws) != OOR {
                    pos += nws - 1
                    _ = add(pos)
                    continue
                }
                if nws > 0 {
                    pos += nws
                    _ = add(pos)
                    continue
                }
                pos += 1
                _ = add(pos)
            }
        }
        return out
    }

    /// Llama-3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    static func llama3Split(_ cpts: [Unicode.Scalar], _ classes: [Flags], _ segments: [Range<Int>]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        for seg in segments {
            let ini = seg.lowerBound, end = seg.upperBound
            let OOR: UInt32 = 0xFFFF_FFFF
            func cpt(_ p: Int) -> UInt32 { (p >= ini && p < end) ? cpts[p].value : OOR }
            func fl(_ p: Int) -> Flags { (p >= ini && p < end) ? classes[p] : Flags() }
            func lower(_ c: UInt32) -> UInt32 { (c >= 0x41 && c <= 0x5a) ? c + 32 : c }
            var prevEnd = ini
            func add(_ e: Int) -> Int {
                let len = e - prevEnd
                if len > 0 { out.append(prevEnd..<e) }
                prevEnd = e
                return len
            }
            var pos = ini
            while pos < end {
                let c = cpt(pos)
                let f = fl(pos)
                if c == 0x27 && pos + 1 < end {
                    let n = lower(cpt(pos + 1))
                    if n == 0x73 || n == 0x74 || n == 0x6d || n == 0x64 {
                        pos += add(pos + 2)
                        continue
                    }
                    if pos + 2 < end {
                        let nn = lower(cpt(pos + 2))
                        if (n == 0x72 && nn == 0x65) || (n == 0x76 && nn == 0x65) || (n == 0x6c && nn == 0x6c) {
                            pos += add(pos + 3)
                            continue
                        }
                    }
                }
                if !(c == 0x0d || c == 0x0a || f.number) {
                    if f.letter || fl(pos + 1).letter {
                        pos += 1
                        while fl(pos).letter { pos += 1 }
                        _ = add(pos)
                        continue
                    }
                }
                if f.number {
                    var start = pos
                    while fl(pos).number {
                        pos += 1
                        if pos - start >= 3 {
                            _ = add(pos)
                            start = pos
                        }
                    }
                    _ = add(pos)
                    continue
                }
                var f2 = c == 0x20 ? fl(pos + 1) : f
                if !(f2.whitespace || f2.letter || f2.number) && f.any {
                    if c == 0x20 { pos += 1 }
                    while !(f2.whitespace || f2.letter || f2.number) && f2.any { pos += 1; f2 = fl(pos) }
                    var c2 = cpt(pos)
                    while c2 == 0x0d || c2 == 0x0a { pos += 1; c2 = cpt(pos) }
                    _ = add(pos)
                    continue
                }
                var nws = 0
                var lastRN = 0
                while fl(pos + nws).whitespace {
                    let c2 = cpt(pos + nws)
                    if c2 == 0x0d || c2 == 0x0a { lastRN = pos + nws + 1 }
                    nws += 1
                }
                if lastRN > 0 {
                    pos = lastRN
                    _ = add(pos)
                    continue
                }
                if nws > 1 && cpt(pos + nws) != OOR {
                    pos += nws - 1
                    _ = add(pos)
                    continue
                }
                if nws > 0 {
                    pos += nws
                    _ = add(pos)
                    continue
                }
                pos += 1
                _ = add(pos)
            }
        }
        return out
    }
}
