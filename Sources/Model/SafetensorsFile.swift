/// One tensor's entry in a safetensors header.
public struct SafetensorsEntry: Sendable, Equatable {
    public let name: String
    /// As written: "F32", "BF16", "I64", …
    public let dtype: String
    /// Row-major shape (PyTorch order: a linear layer's weight is [out, in]).
    public let shape: [Int]
    /// Absolute byte offset of the data in the file.
    public let fileOffset: Int
    public let byteCount: Int

    /// The ggml type for the dtypes the forward pass computes with; nil for the others.
    public var ggmlType: GGMLType? {
        switch dtype {
        case "F32": return .f32
        case "F16": return .f16
        case "BF16": return .bf16
        default: return nil
        }
    }
}

/// A `.safetensors` file: an 8-byte little-endian header length, a JSON header
/// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {…}}`, offsets relative to the end of
/// the header), then the data. The header is validated completely at open (every entry's dtype, shape and byte range),
/// so a corrupt file is an error naming the file and tensor, never a crash later; the data stays mapped.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    /// Entries in header order.
    public let entries: [SafetensorsEntry]
    /// `__metadata__` (string → string), empty when absent.
    public let metadata: [String: String]
    public let mapping: MappedFile
    private let entryIndex: [String: Int]

    /// Element sizes of every dtype the format defines (so unknown strings are recognised as corruption).
    public static let dtypeSizes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
    ]
    /// The reference implementation refuses larger headers too.
    public static let maxHeaderBytes = 100_000_000

    public init(path: String) throws {
        self.path = path
        mapping = try MappedFile(path: path)
        let bytes = mapping.bytes
        func fail(_ field: String, _ reason: String) -> ModelFileError {
            ModelFileError(path: path, field: field, reason: reason)
        }
        guard bytes.count >= 8 else {
            throw fail("header length", "file is \(bytes.count) bytes, shorter than the 8-byte header length (truncated)")
        }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw fail("header length", "\(headerLength) bytes of header, but only \(bytes.count - 8) follow (truncated)")
        }
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw fail("header length", "\(headerLength) bytes exceeds the \(Self.maxHeaderBytes)-byte limit")
        }
        let dataStart = 8 + Int(headerLength)
        let dataSize = bytes.count - dataStart
        let header: JSONValue
        do {
            header = try JSONValue.parse(UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart]))
        } catch let e as JSONError {
            throw fail("header", "\(e.reason) at byte \(8 + e.offset)")
        }
        guard let members = header.objectValue else { throw fail("header", "is a JSON \(header.kindName), not an object") }

        var entries: [SafetensorsEntry] = []
        var index: [String: Int] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                guard let m = value.objectValue else { throw fail("__metadata__", "is a \(value.kindName), not an object") }
                for (k, v) in m {
                    guard let s = v.stringValue else { throw fail("__metadata__.\(k)", "is a \(v.kindName), not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard value.objectValue != nil else { throw fail("tensor '\(name)'", "entry is a \(value.kindName), not an object") }
            guard let dtype = value["dtype"]?.stringValue else { throw fail("tensor '\(name)' dtype", "missing or not a string") }
            guard let elementSize = Self.dtypeSizes[dtype] else {
                throw fail("tensor '\(name)' dtype", "unknown dtype '\(dtype)'")
            }
            guard let dims = value["shape"]?.arrayValue else { throw fail("tensor '\(name)' shape", "missing or not an array") }
            var shape: [Int] = []
            var count = 1
            for d in dims {
                guard let n = d.intValue, n >= 0 else { throw fail("tensor '\(name)' shape", "\(d) is not a dimension") }
                let (m, o) = count.multipliedReportingOverflow(by: n)
                guard !o, m <= Int(Int32.max) * 64 else { throw fail("tensor '\(name)' shape", "element count overflows") }
                count = m
                shape.append(n)
            }
            guard let offsets = value["data_offsets"]?.arrayValue, offsets.count == 2,
                  let begin = offsets[0].intValue, let end = offsets[1].intValue else {
                throw fail("tensor '\(name)' data_offsets", "missing or not two integers")
            }
            guard begin >= 0, begin <= end, end <= dataSize else {
                throw fail("tensor '\(name)' data_offsets",
                           "[\(begin), \(end)] out of range: the data section is \(dataSize) bytes (truncated file?)")
            }
            guard end - begin == count * elementSize else {
                throw fail("tensor '\(name)' data_offsets",
                           "\(end - begin) bytes, but shape \(shape) of \(dtype) needs \(count * elementSize)")
            }
            guard index[name] == nil else { throw fail("tensor '\(name)'", "appears twice in the header") }
            index[name] = entries.count
            entries.append(SafetensorsEntry(name: name, dtype: dtype, shape: shape, fileOffset: dataStart + begin,
                                            byteCount: end - begin))
        }
        self.entries = entries
        self.entryIndex = index
        self.metadata = metadata
    }

    public func entry(named name: String) -> SafetensorsEntry? { entryIndex[name].map { entries[$0] } }

    /// The entry's bytes (no copy).
    public func data(of entry: SafetensorsEntry) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: mapping.bytes[entry.fileOffset..<(entry.fileOffset + entry.byteCount)])
    }
}

extension SafetensorsFile {
    /// The bytes of a safetensors file holding `tensors` in order, data packed back to back (the header is padded
    /// with spaces to a multiple of 8 bytes, as the reference writer does). For tests and exports.
    public static func serialize(_ tensors: [(name: String, dtype: String, shape: [Int], data: [UInt8])],
                                 metadata: [String: String] = [:]) -> [UInt8] {
        func quoted(_ s: String) -> String {
            var out = "\""
            for c in s.unicodeScalars {
                switch c {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case _ where c.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(c.value, radix: 16).count)
                    + String(c.value, radix: 16)
                default: out.unicodeScalars.append(c)
                }
            }
            return out + "\""
        }
        var members: [String] = []
        if !metadata.isEmpty {
            members.append("\"__metadata__\":{" + metadata.sorted { $0.key < $1.key }
                .map { quoted($0.key) + ":" + quoted($0.value) }.joined(separator: ",") + "}")
        }
        var offset = 0
        for t in tensors {
            let shape = t.shape.map(String.init).joined(separator: ",")
            members.append(quoted(t.name) + ":{\"dtype\":\(quoted(t.dtype)),\"shape\":[\(shape)],"
                           + "\"data_offsets\":[\(offset),\(offset + t.data.count)]}")
            offset += t.data.count
        }
        var header = Array(("{" + members.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var out = withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init) + header
        for t in tensors { out += t.data }
        return out
    }
}
