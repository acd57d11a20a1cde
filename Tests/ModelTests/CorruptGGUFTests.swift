import Foundation
import Randomness
import Testing
@testable import Model

/// Corrupt and truncated files must give typed errors that name the field — never a crash.
@Suite("Corrupt GGUF files")
struct CorruptGGUFTests {
    static func goodWriter() -> GGUFWriter {
        var w = GGUFWriter()
        w.kv("general.architecture", .string("llama"))
        w.kv("general.name", .string("tiny"))
        w.tensor("blk.0.attn_norm.weight", dims: [8], type: GGMLType.f32.rawValue, data: [UInt8](repeating: 0, count: 32))
        w.tensor("blk.3.attn_q.weight", dims: [32, 2], type: GGMLType.q4_1.rawValue, data: [UInt8](repeating: 1, count: 40))
        return w
    }

    @Test func goodFileParses() throws {
        let f = try GGUFFile(bytes: Self.goodWriter().bytes())
        #expect(f.tensors.count == 2)
        #expect(f.tensors[1].byteCount == 40)
        #expect(try f.tensor(named: "blk.3.attn_q.weight").dequantizeRow(1).count == 32)
    }

    @Test func truncatedHeader() {
        let b = Array(Self.goodWriter().bytes().prefix(10))
        #expect(throws: GGUFError.truncated(field: "tensor_count", offset: 8, needed: 8, fileSize: 10)) {
            try GGUFFile(bytes: b)
        }
        #expect(throws: GGUFError.truncated(field: "magic", offset: 0, needed: 4, fileSize: 2)) {
            try GGUFFile(bytes: [0x47, 0x47])
        }
    }

    @Test func badMagic() {
        var b = Self.goodWriter().bytes()
        b[0] = 0x58
        #expect(throws: GGUFError.badMagic(found: 0x4655_4758)) { try GGUFFile(bytes: b) }
    }

    @Test func badStringLength() throws {
        var b = Self.goodWriter().bytes()
        // First key's length prefix is at offset 24.
        b.replaceSubrange(24..<32, with: GGUFWriter.u64(1 << 40))
        let e = try #require(throws: GGUFError.self) { try GGUFFile(bytes: b) }
        #expect(e == .badStringLength(field: "metadata[0].key", offset: 24, length: 1 << 40, fileSize: b.count))
        #expect(e.description.contains("metadata[0].key") && e.description.contains("byte 24"))
        // A string value's length.
        var w = GGUFWriter()
        w.kv("general.name", .string("x"))
        var b2 = w.bytes()
        let valueLenOffset = 24 + 8 + "general.name".utf8.count + 4
        b2.replaceSubrange(valueLenOffset..<(valueLenOffset + 8), with: GGUFWriter.u64(999))
        #expect(throws: GGUFError.badStringLength(field: "metadata 'general.name'", offset: valueLenOffset,
                                                  length: 999, fileSize: b2.count)) { try GGUFFile(bytes: b2) }
    }

    @Test func tensorDataPastEOF() throws {
        let b = Self.goodWriter().bytes()
        let good = try GGUFFile(bytes: b)
        let dataEnd = good.tensors.map { $0.fileOffset + $0.byteCount }.max()!
        let cut = Array(b.prefix(dataEnd - 1))
        let e = try #require(throws: GGUFError.self) { try GGUFFile(bytes: cut) }
        guard case let .tensorDataOutOfRange(name, start, end, size) = e else {
            Issue.record("unexpected error \(e)"); return
        }
        #expect(name == "blk.3.attn_q.weight")
        #expect(end == start + 40 && size == cut.count && end > size)
        #expect(e.description == "GGUF: tensor 'blk.3.attn_q.weight': data range \(start)..\(end) beyond file size \(size)")
        // An offset field pointing far away.
        var w = Self.goodWriter()
        w.offsetOverride["blk.0.attn_norm.weight"] = 1 << 30
        let e2 = try #require(throws: GGUFError.self) { try GGUFFile(bytes: w.bytes()) }
        #expect(e2.field == "blk.0.attn_norm.weight")
    }

    @Test func badTypeIDs() throws {
        // Metadata value type.
        var b = Self.goodWriter().bytes()
        let typeOffset = 24 + 8 + "general.architecture".utf8.count
        b.replaceSubrange(typeOffset..<(typeOffset + 4), with: GGUFWriter.u32(99))
        #expect(throws: GGUFError.badValueType(field: "metadata 'general.architecture'", offset: typeOffset, typeID: 99)) {
            try GGUFFile(bytes: b)
        }
        // Array element type.
        var w = GGUFWriter()
        w.kv("a", .array(elementType: .uint8, values: [.uint8(1)]))
        var b2 = w.bytes()
        let elOff = 24 + 8 + 1 + 4
        b2.replaceSubrange(elOff..<(elOff + 4), with: GGUFWriter.u32(77))
        #expect(throws: GGUFError.badValueType(field: "metadata 'a' element type", offset: elOff, typeID: 77)) {
            try GGUFFile(bytes: b2)
        }
        // Tensor type (Q5_0 = 6 is a real ggml type but unsupported; 1234 is not a type at all).
        for bad: UInt32 in [6, 1234] {
            var w3 = GGUFWriter()
            w3.tensor("blk.0.ffn_up.weight", dims: [32], type: bad, data: [UInt8](repeating: 0, count: 32))
            let e = try #require(throws: GGUFError.self) { try GGUFFile(bytes: w3.bytes()) }
            guard case let .badTensorType(name, _, id) = e else { Issue.record("unexpected \(e)"); continue }
            #expect(name == "blk.0.ffn_up.weight" && id == bad)
        }
    }

    @Test func badShapesAndCounts() throws {
        var w = GGUFWriter()
        w.tensor("x", dims: [33], type: GGMLType.q8_0.rawValue, data: [UInt8](repeating: 0, count: 68))
        #expect(throws: GGUFError.self) { try GGUFFile(bytes: w.bytes()) }
        var w2 = GGUFWriter()
        w2.tensor("y", dims: [0, 4], type: GGMLType.f32.rawValue, data: [])
        let e2 = try #require(throws: GGUFError.self) { try GGUFFile(bytes: w2.bytes()) }
        #expect(e2.field == "y")
        var b = Self.goodWriter().bytes()
        b.replaceSubrange(16..<24, with: GGUFWriter.u64(UInt64.max))  // kv_count
        #expect(throws: GGUFError.badCount(field: "kv_count", offset: 16, count: UInt64.max)) { try GGUFFile(bytes: b) }
        var w3 = GGUFWriter()
        w3.kv("general.alignment", .uint32(3))
        #expect(throws: GGUFError.badAlignment(3)) { try GGUFFile(bytes: w3.bytes()) }
        var w4 = GGUFWriter()
        w4.kv("k", .uint8(1))
        w4.kv("k", .uint8(2))
        #expect(throws: GGUFError.duplicate(kind: "metadata key", name: "k", offset: 24 + 8 + 1 + 4 + 1)) {
            try GGUFFile(bytes: w4.bytes())
        }
    }

    @Test("every truncation of a valid file throws a typed error")
    func everyTruncation() throws {
        let b = try Array(Data(contentsOf: URL(fileURLWithPath: Support.fixture("synthetic.gguf"))))
        let full = try GGUFFile(bytes: b)
        let lastTensorEnd = full.tensors.map { $0.fileOffset + $0.byteCount }.max()!
        for n in stride(from: 0, to: lastTensorEnd, by: 1) {
            #expect(throws: GGUFError.self) { try GGUFFile(bytes: Array(b.prefix(n))) }
        }
    }

    @Test("random byte corruption never crashes")
    func randomCorruption() throws {
        let b = try Array(Data(contentsOf: URL(fileURLWithPath: Support.fixture("synthetic.gguf"))))
        var rng = SplitMix64(seed: 42)
        let headerEnd = 1000  // corrupt the metadata / tensor-info region
        for _ in 0..<400 {
            var c = b
            for _ in 0..<3 { c[Int(rng.next() % UInt64(headerEnd))] = UInt8(truncatingIfNeeded: rng.next()) }
            if let f = try? GGUFFile(bytes: c) {
                for t in f.tensors { _ = GGUFTensor(file: f, info: t).dequantizeRow(t.rowCount - 1) }
            }
        }
    }
}
