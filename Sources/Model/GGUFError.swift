/// Errors from reading a GGUF file. Every case that concerns the file's bytes names the
/// field and the byte offset at which the problem was found, so a corrupt file can be diagnosed
/// from the message alone.
public enum GGUFError: Error, Equatable, Sendable, CustomStringConvertible {
    /// open/fstat/mmap failed.
    case io(path: String, operation: String, errno: Int32)
    /// The file ends before `field` (needs `needed` bytes at `offset`).
    case truncated(field: String, offset: Int, needed: Int, fileSize: Int)
    /// The first four bytes are not "GGUF".
    case badMagic(found: UInt32)
    /// Only versions 2 and 3 are supported.
    case unsupportedVersion(UInt32)
    /// A string length prefix that cannot be right (longer than the rest of the file).
    case badStringLength(field: String, offset: Int, length: UInt64, fileSize: Int)
    /// An element count (array length, tensor count, kv count, dimension count) that cannot be right.
    case badCount(field: String, offset: Int, count: UInt64)
    /// A metadata value type id outside the GGUF spec.
    case badValueType(field: String, offset: Int, typeID: UInt32)
    /// A tensor type id that is unknown or not supported by this reader.
    case badTensorType(tensor: String, offset: Int, typeID: UInt32)
    /// A tensor's dimensions are invalid (zero/negative, overflow, not a multiple of the block size).
    case badTensorShape(tensor: String, offset: Int, reason: String)
    /// A tensor's data lies (partly) beyond the end of the file.
    case tensorDataOutOfRange(tensor: String, start: Int, end: Int, fileSize: Int)
    /// A tensor's data offset is not a multiple of the file's alignment.
    case misalignedTensor(tensor: String, offset: UInt64, alignment: Int)
    /// `general.alignment` is zero or not a power of two.
    case badAlignment(UInt64)
    /// Two metadata entries or two tensors with the same name.
    case duplicate(kind: String, name: String, offset: Int)
    /// A required metadata key is absent.
    case missingKey(String)
    /// A metadata key has a value of an unexpected type.
    case typeMismatch(key: String, expected: String, found: String)
    /// A metadata value is present and well-typed but not usable (e.g. negative head count).
    case invalidValue(key: String, reason: String)
    /// No tensor of that name.
    case missingTensor(String)
    /// The path is a FIFO, a directory, a device…: only regular files are read.
    case notARegularFile(path: String)

    public var description: String {
        switch self {
        case let .notARegularFile(path):
            return "GGUF: '\(path)' is not a regular file (a FIFO, directory or device?)"
        case let .io(path, op, e):
            return "GGUF: \(op) '\(path)' failed (errno \(e))"
        case let .truncated(field, offset, needed, size):
            return "GGUF: \(field) at byte \(offset): needs \(needed) bytes, but file size is \(size) (truncated)"
        case let .badMagic(found):
            return "GGUF: bad magic 0x\(String(found, radix: 16)) at byte 0 (expected 'GGUF')"
        case let .unsupportedVersion(v):
            return "GGUF: unsupported version \(v) at byte 4 (supported: 2, 3)"
        case let .badStringLength(field, offset, len, size):
            return "GGUF: \(field) at byte \(offset): string length \(len) exceeds file size \(size)"
        case let .badCount(field, offset, count):
            return "GGUF: \(field) at byte \(offset): count \(count) is impossible for this file"
        case let .badValueType(field, offset, t):
            return "GGUF: \(field) at byte \(offset): unknown value type id \(t)"
        case let .badTensorType(tensor, offset, t):
            return "GGUF: tensor '\(tensor)' at byte \(offset): unknown or unsupported tensor type id \(t)"
        case let .badTensorShape(tensor, offset, reason):
            return "GGUF: tensor '\(tensor)' at byte \(offset): \(reason)"
        case let .tensorDataOutOfRange(tensor, start, end, size):
            return "GGUF: tensor '\(tensor)': data range \(start)..\(end) beyond file size \(size)"
        case let .misalignedTensor(tensor, offset, alignment):
            return "GGUF: tensor '\(tensor)': data offset \(offset) is not a multiple of alignment \(alignment)"
        case let .badAlignment(a):
            return "GGUF: general.alignment \(a) is not a positive power of two"
        case let .duplicate(kind, name, offset):
            return "GGUF: duplicate \(kind) '\(name)' at byte \(offset)"
        case let .missingKey(k):
            return "GGUF: required metadata key '\(k)' is missing"
        case let .typeMismatch(k, expected, found):
            return "GGUF: metadata key '\(k)' has type \(found), expected \(expected)"
        case let .invalidValue(k, reason):
            return "GGUF: metadata key '\(k)': \(reason)"
        case let .missingTensor(n):
            return "GGUF: no tensor named '\(n)'"
        }
    }

    /// The field or tensor name this error is about, if any.
    public var field: String? {
        switch self {
        case .truncated(let f, _, _, _), .badStringLength(let f, _, _, _), .badCount(let f, _, _),
             .badValueType(let f, _, _):
            return f
        case .badTensorType(let t, _, _), .badTensorShape(let t, _, _), .tensorDataOutOfRange(let t, _, _, _),
             .misalignedTensor(let t, _, _), .missingTensor(let t):
            return t
        case .missingKey(let k), .typeMismatch(let k, _, _), .invalidValue(let k, _):
            return k
        case .duplicate(_, let n, _):
            return n
        case .io, .badMagic, .unsupportedVersion, .badAlignment, .notARegularFile:
            return nil
        }
    }
}
