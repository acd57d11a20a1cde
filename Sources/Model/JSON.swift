/// A parsed JSON value. The Model target is Foundation-free (see docs/architecture.md), and safetensors headers,
/// `config.json` and `tokenizer.json` need only this much: a strict RFC 8259 parser with errors that say where.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    /// Keys in document order (safetensors offsets and tokenizer vocabularies do not need it, but it is free).
    case object([(key: String, value: JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: return false
        }
    }

    /// Member `key` of an object (the last one if repeated); nil for a missing key or a non-object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.last { $0.key == key }?.value
    }

    public var isNull: Bool { if case .null = self { return true } else { return false } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var doubleValue: Double? { if case .number(let d) = self { return d } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var objectValue: [(key: String, value: JSONValue)]? {
        if case .object(let o) = self { return o } else { return nil }
    }

    /// The number as an Int if it is integral and exactly representable (|x| ≤ 2^53).
    public var intValue: Int? {
        guard case .number(let d) = self, d.rounded() == d, abs(d) <= 9_007_199_254_740_992 else { return nil }
        return Int(d)
    }

    /// A short name of the value's kind for error messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "bool"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }

    /// Parses one JSON document (surrounding whitespace allowed, nothing else).
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> JSONValue {
        var p = JSONParser(bytes: bytes)
        p.skipWhitespace()
        let v = try p.value(depth: 0)
        p.skipWhitespace()
        guard p.offset == bytes.count else { throw JSONError(offset: p.offset, reason: "unexpected data after the document") }
        return v
    }

    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        try bytes.withUnsafeBytes { try parse($0) }
    }

    /// Reads a document that is one top-level array, handing each element to `body` as it is parsed (the whole
    /// array is never held). A document cut off inside the array — in the middle of an element, or before its `]` —
    /// is not an error: the complete elements before the cut are read and the result says where it was. Any other
    /// malformation throws.
    public static func forEachElement(ofArray bytes: UnsafeRawBufferPointer,
                                      _ body: (JSONValue) throws -> Void) throws -> ArrayPrefix {
        var p = JSONParser(bytes: bytes)
        p.skipWhitespace()
        guard p.current == UInt8(ascii: "[") else { throw p.fail("expected a top-level array") }
        p.offset += 1
        var count = 0
        while true {
            p.skipWhitespace()
            if count == 0, p.current == UInt8(ascii: "]") { p.offset += 1; break }
            let start = p.offset
            let element: JSONValue
            do {
                element = try p.value(depth: 1)
            } catch let e as JSONError where e.reachedEnd(of: bytes) {
                return ArrayPrefix(elements: count, cutAt: start)
            }
            p.skipWhitespace()
            // An element is complete only when what follows it is there too (a number cut short looks whole).
            guard let next = p.current else { return ArrayPrefix(elements: count, cutAt: start) }
            guard next == UInt8(ascii: ",") || next == UInt8(ascii: "]") else {
                throw p.fail("expected ',' or ']' in array")
            }
            try body(element)
            count += 1
            p.offset += 1
            if next == UInt8(ascii: "]") { return ArrayPrefix(elements: count, cutAt: nil) }
        }
        return ArrayPrefix(elements: count, cutAt: nil)
    }

    /// What `forEachElement(ofArray:_:)` read.
    public struct ArrayPrefix: Sendable, Equatable {
        /// Complete elements read.
        public var elements: Int
        /// The byte where the document was cut off (the start of the incomplete element), or nil if it was whole.
        public var cutAt: Int?
    }
}

extension JSONError {
    /// The parser ran out of input (a truncated document) rather than meeting a wrong byte: the failure is within
    /// the last few bytes, where an escape or literal cut short is reported.
    func reachedEnd(of bytes: UnsafeRawBufferPointer) -> Bool { offset >= bytes.count - 6 }
}

/// Malformed JSON: what was wrong and at which byte of the document.
public struct JSONError: Error, Equatable, Sendable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

struct JSONParser {
    let bytes: UnsafeRawBufferPointer
    var offset = 0
    /// Deep enough for any real config; bounded so a hostile file cannot overflow the stack.
    static let maxDepth = 256

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    func fail(_ reason: String) -> JSONError { JSONError(offset: offset, reason: reason) }

    var current: UInt8? { offset < bytes.count ? bytes[offset] : nil }

    mutating func skipWhitespace() {
        while let c = current, c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09 { offset += 1 }
    }

    mutating func expect(_ literal: StaticString) throws {
        let n = literal.utf8CodeUnitCount
        guard bytes.count - offset >= n,
              (0..<n).allSatisfy({ bytes[offset + $0] == literal.utf8Start[$0] }) else {
            throw fail("expected '\(literal)'")
        }
        offset += n
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < Self.maxDepth else { throw fail("nesting deeper than \(Self.maxDepth)") }
        guard let c = current else { throw fail("unexpected end of document") }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw fail("unexpected character '\(Unicode.Scalar(c))'")
        }
    }

    mutating func object(depth: Int) throws -> JSONValue {
        offset += 1
        var members: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if current == UInt8(ascii: "}") { offset += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try string()
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw fail("expected ':' after key \"\(key)\"") }
            offset += 1
            skipWhitespace()
            members.append((key, try value(depth: depth + 1)))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "}"): offset += 1; return .object(members)
            default: throw fail("expected ',' or '}' in object")
            }
        }
    }

    mutating func array(depth: Int) throws -> JSONValue {
        offset += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { offset += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try value(depth: depth + 1))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "]"): offset += 1; return .array(items)
            default: throw fail("expected ',' or ']' in array")
            }
        }
    }

    mutating func string() throws -> String {
        offset += 1
        let start = offset
        // Fast path: no escapes.
        while let c = current, c != UInt8(ascii: "\""), c != UInt8(ascii: "\\") {
            guard c >= 0x20 else { throw fail("control character in string") }
            offset += 1
        }
        var out = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<offset]))
        while true {
            guard let c = current else { throw fail("unterminated string") }
            offset += 1
            if c == UInt8(ascii: "\"") { break }
            if c != UInt8(ascii: "\\") {
                guard c >= 0x20 else { offset -= 1; throw fail("control character in string") }
                out.append(c)
                continue
            }
            guard let e = current else { throw fail("unterminated escape") }
            offset += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    guard bytes.count - offset >= 2, bytes[offset] == UInt8(ascii: "\\"),
                          bytes[offset + 1] == UInt8(ascii: "u") else { throw fail("unpaired surrogate") }
                    offset += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw fail("unpaired surrogate")
                }
                out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
            default:
                throw fail("bad escape '\\\(Unicode.Scalar(e))'")
            }
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }

    mutating func hex4() throws -> UInt32 {
        guard bytes.count - offset >= 4 else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[offset]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw fail("bad hex digit in \\u escape")
            }
            v = v << 4 | d
            offset += 1
        }
        return v
    }

    mutating func number() throws -> Double {
        let start = offset
        func digits(_ p: inout JSONParser) -> Int {
            let s = p.offset
            while let c = p.current, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { p.offset += 1 }
            return p.offset - s
        }
        if current == UInt8(ascii: "-") { offset += 1 }
        let intStart = offset
        let n = digits(&self)
        guard n > 0 else { throw fail("expected digits") }
        guard !(n > 1 && bytes[intStart] == UInt8(ascii: "0")) else { throw fail("leading zero in number") }
        if current == UInt8(ascii: ".") {
            offset += 1
            guard digits(&self) > 0 else { throw fail("expected digits after '.'") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            offset += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { offset += 1 }
            guard digits(&self) > 0 else { throw fail("expected exponent digits") }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self)
        guard let d = Double(text) else { offset = start; throw fail("unreadable number '\(text)'") }
        return d
    }
}
