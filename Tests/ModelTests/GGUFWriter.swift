@testable import Model

/// Minimal GGUF writer for building synthetic (and deliberately corrupt) files in tests.
struct GGUFWriter {
    var version: UInt32 = 3
    var alignment = 32
    var kvs: [(String, GGUFValue)] = []
    var tensors: [(name: String, dims: [UInt64], type: UInt32, data: [UInt8])] = []
    /// Offsets written for tensors (relative to data start); nil entries are computed.
    var offsetOverride: [String: UInt64] = [:]

    mutating func kv(_ k: String, _ v: GGUFValue) { kvs.append((k, v)) }
    mutating func tensor(_ name: String, dims: [UInt64], type: UInt32, data: [UInt8]) {
        tensors.append((name, dims, type, data))
    }

    static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func str(_ s: String) -> [UInt8] { u64(UInt64(s.utf8.count)) + Array(s.utf8) }

    static func value(_ v: GGUFValue) -> [UInt8] {
        switch v {
        case .uint8(let x): return [x]
        case .int8(let x): return [UInt8(bitPattern: x)]
        case .uint16(let x): return withUnsafeBytes(of: x.littleEndian, Array.init)
        case .int16(let x): return withUnsafeBytes(of: x.littleEndian, Array.init)
        case .uint32(let x): return u32(x)
        case .int32(let x): return withUnsafeBytes(of: x.littleEndian, Array.init)
        case .uint64(let x): return u64(x)
        case .int64(let x): return withUnsafeBytes(of: x.littleEndian, Array.init)
        case .float32(let x): return u32(x.bitPattern)
        case .float64(let x): return u64(x.bitPattern)
        case .bool(let b): return [b ? 1 : 0]
        case .string(let s): return str(s)
        case let .array(t, vals): return u32(t.rawValue) + u64(UInt64(vals.count)) + vals.flatMap(value)
        }
    }

    /// Byte offset where the header fields end (after magic, version, counts).
    static let headerSize = 24

    func bytes() -> [UInt8] {
        var out: [UInt8] = Array("GGUF".utf8) + GGUFWriter.u32(version)
        out += GGUFWriter.u64(UInt64(tensors.count)) + GGUFWriter.u64(UInt64(kvs.count))
        for (k, v) in kvs { out += GGUFWriter.str(k) + GGUFWriter.u32(v.type.rawValue) + GGUFWriter.value(v) }
        var rel: UInt64 = 0
        var offsets: [UInt64] = []
        for t in tensors {
            offsets.append(offsetOverride[t.name] ?? rel)
            rel += UInt64((t.data.count + alignment - 1) / alignment * alignment)
        }
        for (i, t) in tensors.enumerated() {
            out += GGUFWriter.str(t.name) + GGUFWriter.u32(UInt32(t.dims.count))
            for d in t.dims { out += GGUFWriter.u64(d) }
            out += GGUFWriter.u32(t.type) + GGUFWriter.u64(offsets[i])
        }
        while out.count % alignment != 0 { out.append(0) }
        for t in tensors {
            out += t.data
            while out.count % alignment != 0 { out.append(0) }
        }
        return out
    }
}
