import Engine
import Testing

/// The stop-string search the engine made before `StopScanner` (whole held text against every stop string, every
/// token), kept as the reference: on ASCII text the scanner must cut and hold back exactly as it did.
private struct RescanEveryToken {
    let stops: [String]
    var held = ""

    mutating func push(_ piece: String) -> (text: String, stopped: Bool) {
        held += piece
        if let range = stops.compactMap({ held.firstRange(of: $0) }).min(by: { $0.lowerBound < $1.lowerBound }) {
            defer { held = "" }
            return (String(held[..<range.lowerBound]), true)
        }
        let keep = stops.map { stop in
            var n = min(held.count, stop.count - 1)
            while n > 0 && !stop.hasPrefix(held.suffix(n)) { n -= 1 }
            return n
        }.max() ?? 0
        defer { held = String(held.suffix(keep)) }
        return (String(held.dropLast(keep)), false)
    }
}

@Suite("Stop strings")
struct StopScannerTests {
    @Test("cuts and holds back exactly as rescanning the whole held text did")
    func matchesTheReference() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("ab ")
        func word(_ n: ClosedRange<Int>) -> String { String((0..<Int.random(in: n, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }) }
        for _ in 0..<2000 {
            let stops = (0..<Int.random(in: 1...4, using: &rng)).map { _ in word(1...6) }
            var scanner = StopScanner(stops)
            var reference = RescanEveryToken(stops: stops)
            for _ in 0..<30 {
                let piece = word(0...4)
                let got = scanner.push(piece), want = reference.push(piece)
                #expect(got.text == want.text && got.stopped == want.stopped, "stops \(stops), piece '\(piece)'")
                if want.stopped { break }
            }
        }
    }

    @Test("text around multi-byte characters is cut between characters")
    func unicode() {
        func check(_ s: inout StopScanner, _ piece: String, _ text: String, _ stopped: Bool) {
            let r = s.push(piece)
            #expect(r.text == text && r.stopped == stopped, "'\(piece)' -> '\(r.text)' \(r.stopped)")
        }
        var s = StopScanner(["é!", "→x"])
        check(&s, "café", "caf", false)
        check(&s, "é →", "éé ", false)
        check(&s, "y→x", "→y", true)
        var t = StopScanner(["e\u{301}\u{301}"])
        check(&t, "e\u{301}", "", false)
        check(&t, " ok", "e\u{301} ok", false)
        let rest = t.flush()
        #expect(rest.isEmpty)
    }

    @Test("the largest allowed stop strings cost a bounded amount per byte of new text")
    func workIsLinear() {
        // Four 512-byte stop strings the text keeps nearly matching: rescanning held back ~511 bytes per token and
        // compared them again on every token; the automaton compares each new byte a bounded number of times.
        let stops = ["a" + String(repeating: "a", count: 510) + "b", String(repeating: "a", count: 511) + "c",
                     String(repeating: "ab", count: 255) + "aX", String(repeating: "a", count: 300) + "!" + String(repeating: "a", count: 211)]
        #expect(stops.allSatisfy { $0.utf8.count == 512 })
        var s = StopScanner(stops)
        var fed = 0, out = 0
        for i in 0..<20_000 {
            let piece = i % 700 == 699 ? "x a" : "a"
            fed += piece.utf8.count
            let (text, stopped) = s.push(piece)
            out += text.utf8.count
            #expect(!stopped)
            #expect(s.heldBytes < 512)
        }
        out += s.flush().utf8.count
        #expect(out == fed, "every byte comes out once")
        #expect(s.comparisons <= 2 * fed * stops.count, "\(s.comparisons) comparisons for \(fed) bytes")
    }
}
