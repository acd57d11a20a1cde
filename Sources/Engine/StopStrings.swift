/// Finds a request's stop strings in its text as the text arrives, piece by piece, holding back the tail that could
/// still become one.
///
/// Each stop string is a Knuth–Morris–Pratt automaton over UTF-8 bytes whose state — the longest tail of the text so
/// far that is a start of the stop string — is kept between pieces, so a piece costs O(its bytes) per stop string
/// (amortized; never more than O(its bytes × the stop string's length)), however long the stop strings or the text.
/// Matching is on exact UTF-8 (code points, as vLLM matches Python strings), not on canonically equivalent
/// characters. Since a stop string starts with a lead byte, every cut falls between characters.
public struct StopScanner: Sendable {
    private struct Pattern: Sendable {
        let bytes: [UInt8]
        /// failure[i]: the longest proper prefix of bytes[0...i] that is also its suffix.
        let failure: [Int]
        /// Bytes of the pattern that the end of the text matches.
        var matched = 0

        init(_ s: String) {
            bytes = Array(s.utf8)
            var f = [Int](repeating: 0, count: bytes.count)
            var k = 0
            for i in bytes.indices.dropFirst() {
                while k > 0 && bytes[i] != bytes[k] { k = f[k - 1] }
                if bytes[i] == bytes[k] { k += 1 }
                f[i] = k
            }
            failure = f
        }
    }

    private var patterns: [Pattern]
    /// Text not emitted yet: shorter than the longest stop string.
    private var held: [UInt8] = []
    /// Byte comparisons made so far (tests check the work per byte stays bounded).
    public private(set) var comparisons = 0

    /// Empty strings are ignored (they would match everywhere).
    public init(_ stops: [String]) {
        patterns = stops.filter { !$0.isEmpty }.map(Pattern.init)
    }

    /// Bytes held back now.
    public var heldBytes: Int { held.count }

    /// Adds `piece`; returns what may be sent now, and whether a stop string appeared — then the text is what came
    /// before the earliest one, and the rest is dropped.
    public mutating func push(_ piece: String) -> (text: String, stopped: Bool) {
        if patterns.isEmpty { return (piece, false) }
        let base = held.count
        held.append(contentsOf: piece.utf8)
        var stopAt: Int?
        for p in patterns.indices {
            let bytes = patterns[p].bytes, failure = patterns[p].failure
            var q = patterns[p].matched, i = base, n = 0
            while i < held.count {
                let c = held[i]
                while q > 0 && bytes[q] != c {
                    q = failure[q - 1]
                    n += 1
                }
                n += 1
                if bytes[q] == c { q += 1 }
                if q == bytes.count {
                    let start = i + 1 - bytes.count
                    stopAt = min(stopAt ?? start, start)
                    break
                }
                i += 1
            }
            comparisons += n
            patterns[p].matched = q
        }
        if let stopAt {
            defer { held = [] }
            return (String(decoding: held[..<stopAt], as: UTF8.self), true)
        }
        let keep = patterns.reduce(0) { max($0, $1.matched) }
        defer { held.removeFirst(held.count - keep) }
        return (String(decoding: held[..<(held.count - keep)], as: UTF8.self), false)
    }

    /// Everything held back (the text ended without a stop string).
    public mutating func flush() -> String {
        defer {
            held = []
            for p in patterns.indices { patterns[p].matched = 0 }
        }
        return String(decoding: held, as: UTF8.self)
    }
}
