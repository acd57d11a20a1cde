import Foundation
import Testing
@testable import Model

/// A fresh directory under the system temp dir, removed by the caller (`defer { remove(dir) }`).
func makeTempDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vattn-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

func write(_ bytes: [UInt8], to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }
func write(_ text: String, to path: String) throws { try write(Array(text.utf8), to: path) }

func f32Bytes(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes(Array.init) }

/// A header-level safetensors file: 8-byte length + the given header text + data.
func rawSafetensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    return withUnsafeBytes(of: (declaredLength ?? UInt64(h.count)).littleEndian, Array.init) + h + data
}

@Suite("safetensors files: header parsing and corruption")
struct SafetensorsFileTests {
    func open(_ bytes: [UInt8]) throws -> SafetensorsFile {
        let dir = try makeTempDirectory()
        defer { remove(dir) }
        try write(bytes, to: dir + "/t.safetensors")
        return try SafetensorsFile(path: dir + "/t.safetensors")
    }

    /// Opening must fail with a ModelFileError whose field and reason contain the given fragments.
    func expectError(_ bytes: [UInt8], field: String, reason: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try open(bytes)
            Issue.record("opened a corrupt file (expected \(field): \(reason))", sourceLocation: sourceLocation)
        } catch let e as ModelFileError {
            #expect(e.path.hasSuffix("t.safetensors"), sourceLocation: sourceLocation)
            #expect(e.field.contains(field), "field '\(e.field)'", sourceLocation: sourceLocation)
            #expect(e.reason.contains(reason), "reason '\(e.reason)'", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test("round trip through serialize: entries, metadata, zero-copy data")
    func roundTrip() throws {
        let values: [Float] = [1, -2, 3.5, 4, 5, 6]
        let bytes = SafetensorsFile.serialize([("a", "F32", [2, 3], f32Bytes(values)), ("b", "BF16", [2], [0, 0x3f, 0, 0x40])],
                                              metadata: ["format": "pt"])
        let f = try open(bytes)
        #expect(f.entries.map(\.name) == ["a", "b"])
        #expect(f.metadata == ["format": "pt"])
        let a = try #require(f.entry(named: "a"))
        #expect(a.shape == [2, 3] && a.ggmlType == .f32 && a.byteCount == 24)
        #expect(Quant.dequantize(.f32, f.data(of: a), count: 6) == values)
        #expect(Quant.dequantize(.bf16, f.data(of: f.entry(named: "b")!), count: 2) == [0.5, 2])
    }

    @Test("truncated, bad JSON, out-of-range offsets, unknown dtype, wrong sizes: errors naming the problem")
    func corruptFiles() {
        let good = SafetensorsFile.serialize([("w", "F32", [2, 2], f32Bytes([1, 2, 3, 4]))])
        expectError(Array(good.prefix(5)), field: "header length", reason: "truncated")
        expectError(Array(good.prefix(20)), field: "header length", reason: "truncated")
        expectError(rawSafetensors(header: "{}", declaredLength: 1 << 40), field: "header length", reason: "truncated")
        expectError(rawSafetensors(header: "{\"w\": {\"dtype\": \"F32\""), field: "header", reason: "at byte")
        expectError(rawSafetensors(header: "[1, 2]"), field: "header", reason: "not an object")
        expectError(rawSafetensors(header: #"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, data: [0, 0, 0]),
                    field: "tensor 'w' data_offsets", reason: "out of range")
        expectError(rawSafetensors(header: #"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 0]}}"#, data: Array(repeating: 0, count: 8)),
                    field: "tensor 'w' data_offsets", reason: "out of range")
        expectError(rawSafetensors(header: #"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#, data: Array(repeating: 0, count: 8)),
                    field: "tensor 'w' data_offsets", reason: "needs 12")
        expectError(rawSafetensors(header: #"{"w": {"dtype": "Q9", "shape": [2], "data_offsets": [0, 8]}}"#, data: Array(repeating: 0, count: 8)),
                    field: "tensor 'w' dtype", reason: "unknown dtype 'Q9'")
        expectError(rawSafetensors(header: #"{"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}"#),
                    field: "tensor 'w' shape", reason: "not a dimension")
        expectError(rawSafetensors(header: #"{"w": {"dtype": "F32", "shape": [2]}}"#),
                    field: "tensor 'w' data_offsets", reason: "missing")
        expectError(rawSafetensors(header: #"{"w": 3}"#), field: "tensor 'w'", reason: "not an object")
        expectError(rawSafetensors(header: #"{"__metadata__": {"a": 1}}"#), field: "__metadata__.a", reason: "not a string")
    }

    @Test("every prefix of a valid file is rejected cleanly, never a crash")
    func everyTruncation() throws {
        let good = SafetensorsFile.serialize([("w", "F32", [2, 2], f32Bytes([1, 2, 3, 4])), ("n", "F16", [3], [0, 0x3c, 0, 0x3c, 0, 0x3c])])
        for n in 0..<good.count {
            #expect(throws: ModelFileError.self) { _ = try open(Array(good.prefix(n))) }
        }
        _ = try open(good)
    }
}

@Suite("JSON parser")
struct JSONTests {
    @Test("values, escapes, surrogate pairs, numbers")
    func values() throws {
        let v = try JSONValue.parse(Array(#" {"a": [1, -2.5e3, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00", "o": {}} "#.utf8))
        #expect(v["a"] == .array([.number(1), .number(-2500), .bool(true), .bool(false), .null]))
        #expect(v["s"]?.stringValue == "x\"\\/\né😀")
        #expect(v["o"] == .object([]))
        #expect(v["a"]?.arrayValue?[1].intValue == -2500 && JSONValue.number(1.5).intValue == nil)
    }

    @Test("malformed documents: errors with the byte offset")
    func errors() {
        let cases: [(String, Int)] = [("", 0), ("{", 1), ("[1,]", 3), ("{\"a\" 1}", 5), ("01", 2), ("\"\\ud800\"", 7),
                                      ("[1] x", 4), ("tru", 0), ("\"abc", 4), (String(repeating: "[", count: 300), 256)]
        for (text, offset) in cases {
            #expect(throws: JSONError.self, "\(text)") { _ = try JSONValue.parse(Array(text.utf8)) }
            do { _ = try JSONValue.parse(Array(text.utf8)) } catch let e as JSONError {
                #expect(e.offset == offset, "\(text): \(e)")
            } catch {}
        }
    }
}
