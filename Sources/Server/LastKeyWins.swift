import FoundationEssentials

/// `json` with every object's repeated keys dropped but the last (Python's `json`, and so vLLM and OpenAI's server,
/// keep the last value of a repeated key; Foundation's `JSONDecoder` keeps the first). nil when no object repeats a
/// key — the common case, which costs one scan and no copy — or the text is not JSON (the decoder then says why).
func lastKeyWins(_ json: Data) -> Data? {
    let bytes = [UInt8](json)
    var scanner = DuplicateKeyScanner(bytes: bytes)
    guard let (end, rewritten) = try? scanner.value(at: scanner.skipSpace(0), depth: 0), let rewritten else { return nil }
    return Data(bytes[..<scanner.skipSpace(0)] + rewritten + bytes[end...])
}

private struct DuplicateKeyScanner {
    struct Invalid: Error {}
    let bytes: [UInt8]
    /// Deeper than this is left to the decoder (which has its own limit), so the scan's recursion stays shallow.
    static let maxDepth = 256

    func skipSpace(_ i: Int) -> Int {
        var i = i
        while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
        return i
    }

    func expect(_ byte: UInt8, at i: Int) throws -> Int {
        guard i < bytes.count, bytes[i] == byte else { throw Invalid() }
        return i + 1
    }

    /// The end of the string starting at `i` (a quote).
    func string(at i: Int) throws -> Int {
        var j = try expect(UInt8(ascii: "\""), at: i)
        while j < bytes.count {
            switch bytes[j] {
            case UInt8(ascii: "\\"): j += 2
            case UInt8(ascii: "\""): return j + 1
            default: j += 1
            }
        }
        throw Invalid()
    }

    /// The end of the value starting at `i`, and its text rewritten when it (or a value inside it) repeats a key.
    mutating func value(at i: Int, depth: Int) throws -> (Int, [UInt8]?) {
        guard i < bytes.count, depth < Self.maxDepth else { throw Invalid() }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try object(at: i, depth: depth)
        case UInt8(ascii: "["):
            var j = skipSpace(i + 1)
            var items: [(range: Range<Int>, rewritten: [UInt8]?)] = []
            var changed = false
            if j < bytes.count, bytes[j] == UInt8(ascii: "]") { return (j + 1, nil) }
            while true {
                let (end, rewritten) = try value(at: j, depth: depth + 1)
                items.append((j..<end, rewritten))
                changed = changed || rewritten != nil
                j = skipSpace(end)
                guard j < bytes.count else { throw Invalid() }
                if bytes[j] == UInt8(ascii: "]") { break }
                j = skipSpace(try expect(UInt8(ascii: ","), at: j))
            }
            guard changed else { return (j + 1, nil) }
            var out = Array("[".utf8)
            for (n, item) in items.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                if let r = item.rewritten { out += r } else { out += bytes[item.range] }
            }
            out.append(UInt8(ascii: "]"))
            return (j + 1, out)
        case UInt8(ascii: "\""): return (try string(at: i), nil)
        default:  // a number, true, false or null: the decoder checks it
            var j = i
            while j < bytes.count, ![UInt8(ascii: ","), UInt8(ascii: "]"), UInt8(ascii: "}"), 0x20, 0x09, 0x0A, 0x0D]
                .contains(bytes[j]) { j += 1 }
            guard j > i else { throw Invalid() }
            return (j, nil)
        }
    }

    mutating func object(at i: Int, depth: Int) throws -> (Int, [UInt8]?) {
        var j = skipSpace(i + 1)
        if j < bytes.count, bytes[j] == UInt8(ascii: "}") { return (j + 1, nil) }
        var members: [(key: String, raw: Range<Int>, value: Range<Int>, rewritten: [UInt8]?)] = []
        var changed = false
        while true {
            let keyEnd = try string(at: j)
            let rawRange = j..<keyEnd
            let raw = bytes[rawRange]
            let key = raw.contains(UInt8(ascii: "\\"))
                ? try JSONDecoder().decode(String.self, from: Data(raw)) : String(decoding: raw.dropFirst().dropLast(), as: UTF8.self)
            j = skipSpace(try expect(UInt8(ascii: ":"), at: skipSpace(keyEnd)))
            let (end, rewritten) = try value(at: j, depth: depth + 1)
            members.append((key, rawRange, j..<end, rewritten))
            changed = changed || rewritten != nil
            j = skipSpace(end)
            guard j < bytes.count else { throw Invalid() }
            if bytes[j] == UInt8(ascii: "}") { break }
            j = skipSpace(try expect(UInt8(ascii: ","), at: j))
        }
        var last: [String: Int] = [:]
        for (n, m) in members.enumerated() { last[m.key] = n }
        guard changed || last.count < members.count else { return (j + 1, nil) }
        var out = Array("{".utf8)
        for (n, m) in members.enumerated() where last[m.key] == n {
            if out.count > 1 { out.append(UInt8(ascii: ",")) }
            out += bytes[m.raw]
            out.append(UInt8(ascii: ":"))
            if let r = m.rewritten { out += r } else { out += bytes[m.value] }
        }
        out.append(UInt8(ascii: "}"))
        return (j + 1, out)
    }
}
