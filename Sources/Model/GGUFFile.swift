#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Description of one tensor in a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous), `dims[1]` the row count, ...
    public let dims: [Int]
    public let type: GGMLType
    /// Offset relative to the start of the data section, as stored in the file.
    public let relativeOffset: Int
    /// Absolute offset of the first byte of the tensor's data in the file.
    public let fileOffset: Int
    /// Size in bytes of the tensor's data.
    public let byteCount: Int

    public var elementCount: Int { dims.reduce(1, *) }
    /// Elements per row (ggml ne[0]).
    public var rowLength: Int { dims.first ?? 1 }
    /// Number of rows (product of ne[1...]).
    public var rowCount: Int { dims.dropFirst().reduce(1, *) }
    /// Bytes per row.
    public var rowBytes: Int { type.byteCount(elements: rowLength) }
}

/// A GGUF file (versions 2 and 3), parsed eagerly for metadata and tensor infos; tensor data
/// stays in a read-only memory mapping and is never copied.
public final class GGUFFile: @unchecked Sendable {
    public static let magic: UInt32 = 0x4655_4747  // "GGUF" little-endian
    public static let defaultAlignment = 32

    public let path: String?
    public let version: UInt32
    /// Metadata in file order.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute offset of the data section.
    public let dataOffset: Int
    public let fileSize: Int

    private let tensorIndex: [String: Int]
    /// The whole file's bytes (mapping or owned allocation); immutable.
    public let bytes: UnsafeRawBufferPointer
    private let ownsAllocation: Bool
    private let mappedLength: Int

    /// Memory-maps the file at `path` read-only and parses it.
    public convenience init(path: String) throws {
        // O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer; only regular files are read.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        if fd < 0 { throw GGUFError.io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw GGUFError.io(path: path, operation: "fstat", errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw GGUFError.notARegularFile(path: path) }
        let size = Int(st.st_size)
        if size == 0 {
            throw GGUFError.truncated(field: "magic", offset: 0, needed: 4, fileSize: 0)
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw GGUFError.io(path: path, operation: "mmap", errno: errno)
        }
        let buf = UnsafeRawBufferPointer(start: UnsafeRawPointer(p), count: size)
        do {
            try self.init(buffer: buf, path: path, owns: false, mappedLength: size)
        } catch {
            munmap(p, size)
            throw error
        }
    }

    /// Parses a GGUF image held in memory (copied; for tests and small files).
    public convenience init(bytes: [UInt8]) throws {
        let count = bytes.count
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64)
        bytes.withUnsafeBytes { src in
            if count > 0 { p.copyMemory(from: src.baseAddress!, byteCount: count) }
        }
        do {
            try self.init(buffer: UnsafeRawBufferPointer(start: p, count: count), path: nil, owns: true, mappedLength: 0)
        } catch {
            p.deallocate()
            throw error
        }
    }

    private init(buffer: UnsafeRawBufferPointer, path: String?, owns: Bool, mappedLength: Int) throws {
        self.bytes = buffer
        self.path = path
        self.ownsAllocation = owns
        self.mappedLength = mappedLength
        self.fileSize = buffer.count

        var r = ByteReader(buffer: buffer)
        let magic = try r.u32("magic")
        guard magic == Self.magic else { throw GGUFError.badMagic(found: magic) }
        let version = try r.u32("version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(version) }
        self.version = version
        let tcOff = r.offset
        let tensorCount = try r.u64("tensor_count")
        let kvOff = r.offset
        let kvCount = try r.u64("kv_count")
        // Each kv needs at least 8 (key len) + 4 (type) + 1 bytes; each tensor info at least 8+4+4+8.
        if kvCount > UInt64(buffer.count / 13) { throw GGUFError.badCount(field: "kv_count", offset: kvOff, count: kvCount) }
        if tensorCount > UInt64(buffer.count / 24) {
            throw GGUFError.badCount(field: "tensor_count", offset: tcOff, count: tensorCount)
        }

        var keys: [String] = []
        keys.reserveCapacity(Int(kvCount))
        var md: [String: GGUFValue] = [:]
        md.reserveCapacity(Int(kvCount))
        for i in 0..<Int(kvCount) {
            let keyOff = r.offset
            let key = try r.string("metadata[\(i)].key")
            let typeOff = r.offset
            let typeID = try r.u32("metadata '\(key)' type")
            guard let t = GGUFValueType(rawValue: typeID) else {
                throw GGUFError.badValueType(field: "metadata '\(key)'", offset: typeOff, typeID: typeID)
            }
            let v = try r.value(type: t, field: "metadata '\(key)'")
            if md[key] != nil { throw GGUFError.duplicate(kind: "metadata key", name: key, offset: keyOff) }
            md[key] = v
            keys.append(key)
        }
        self.metadataKeys = keys
        self.metadata = md

        var alignment = Self.defaultAlignment
        if let a = md["general.alignment"] {
            guard let av = a.intValue else {
                throw GGUFError.typeMismatch(key: "general.alignment", expected: "uint32", found: a.typeName)
            }
            guard av > 0, av & (av - 1) == 0 else { throw GGUFError.badAlignment(UInt64(truncatingIfNeeded: av)) }
            alignment = av
        }
        self.alignment = alignment

        // Tensor infos (offsets validated after the data section start is known).
        struct Raw { let name: String; let dims: [Int]; let type: GGMLType; let rel: UInt64; let infoOffset: Int; let bytes: Int }
        var raws: [Raw] = []
        raws.reserveCapacity(Int(tensorCount))
        var index: [String: Int] = [:]
        for i in 0..<Int(tensorCount) {
            let infoOff = r.offset
            let name = try r.string("tensor[\(i)].name")
            let ndOff = r.offset
            let nd = try r.u32("tensor '\(name)' n_dims")
            guard nd >= 1 && nd <= 4 else {
                throw GGUFError.badCount(field: "tensor '\(name)' n_dims", offset: ndOff, count: UInt64(nd))
            }
            var dims: [Int] = []
            var total: Int = 1
            for d in 0..<Int(nd) {
                let dOff = r.offset
                let v = try r.u64("tensor '\(name)' dims[\(d)]")
                guard v > 0, v <= UInt64(Int32.max) else {
                    throw GGUFError.badTensorShape(tensor: name, offset: dOff, reason: "dimension \(d) = \(v) is out of range")
                }
                let (m, o) = total.multipliedReportingOverflow(by: Int(v))
                guard !o, m <= Int(Int64.max) / 8 else {
                    throw GGUFError.badTensorShape(tensor: name, offset: dOff, reason: "element count overflows")
                }
                total = m
                dims.append(Int(v))
            }
            let typeOff = r.offset
            let typeID = try r.u32("tensor '\(name)' type")
            guard let type = GGMLType(rawValue: typeID) else {
                throw GGUFError.badTensorType(tensor: name, offset: typeOff, typeID: typeID)
            }
            guard dims[0] % type.blockSize == 0 else {
                throw GGUFError.badTensorShape(
                    tensor: name, offset: ndOff + 4,
                    reason: "row length \(dims[0]) is not a multiple of the \(type) block size \(type.blockSize)")
            }
            let rel = try r.u64("tensor '\(name)' offset")
            if index[name] != nil { throw GGUFError.duplicate(kind: "tensor", name: name, offset: infoOff) }
            index[name] = i
            raws.append(Raw(name: name, dims: dims, type: type, rel: rel, infoOffset: infoOff, bytes: type.byteCount(elements: total)))
        }
        self.tensorIndex = index

        // Data section starts at the next multiple of the alignment.
        let end = r.offset
        let dataStart = (end + alignment - 1) / alignment * alignment
        self.dataOffset = dataStart
        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(raws.count)
        for raw in raws {
            guard raw.rel % UInt64(alignment) == 0 else {
                throw GGUFError.misalignedTensor(tensor: raw.name, offset: raw.rel, alignment: alignment)
            }
            guard raw.rel <= UInt64(Int.max / 2) else {
                throw GGUFError.tensorDataOutOfRange(tensor: raw.name, start: Int.max, end: Int.max, fileSize: buffer.count)
            }
            let start = dataStart + Int(raw.rel)
            let stop = start + raw.bytes
            guard stop <= buffer.count else {
                throw GGUFError.tensorDataOutOfRange(tensor: raw.name, start: start, end: stop, fileSize: buffer.count)
            }
            infos.append(GGUFTensorInfo(name: raw.name, dims: raw.dims, type: raw.type, relativeOffset: Int(raw.rel),
                                        fileOffset: start, byteCount: raw.bytes))
        }
        self.tensors = infos
    }

    deinit {
        if ownsAllocation {
            UnsafeMutableRawPointer(mutating: bytes.baseAddress)?.deallocate()
        } else if mappedLength > 0, let base = bytes.baseAddress {
            munmap(UnsafeMutableRawPointer(mutating: base), mappedLength)
        }
    }

    // MARK: Tensors

    public func tensorInfo(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// A view of a tensor's data; throws `missingTensor` if absent.
    public func tensor(named name: String) throws -> GGUFTensor {
        guard let info = tensorInfo(named: name) else { throw GGUFError.missingTensor(name) }
        return GGUFTensor(file: self, info: info)
    }

    // MARK: Metadata accessors

    public subscript(key: String) -> GGUFValue? { metadata[key] }

    public func value(_ key: String) throws -> GGUFValue {
        guard let v = metadata[key] else { throw GGUFError.missingKey(key) }
        return v
    }

    public func string(_ key: String) throws -> String {
        let v = try value(key)
        guard let s = v.stringValue else { throw GGUFError.typeMismatch(key: key, expected: "string", found: v.typeName) }
        return s
    }

    public func int(_ key: String) throws -> Int {
        let v = try value(key)
        guard let i = v.intValue else { throw GGUFError.typeMismatch(key: key, expected: "integer", found: v.typeName) }
        return i
    }

    public func double(_ key: String) throws -> Double {
        let v = try value(key)
        guard let d = v.doubleValue else { throw GGUFError.typeMismatch(key: key, expected: "number", found: v.typeName) }
        return d
    }

    public func bool(_ key: String) throws -> Bool {
        let v = try value(key)
        guard let b = v.boolValue else { throw GGUFError.typeMismatch(key: key, expected: "bool", found: v.typeName) }
        return b
    }

    public func stringArray(_ key: String) throws -> [String] {
        let v = try value(key)
        guard case let .array(t, vals) = v, t == .string || vals.isEmpty else {
            throw GGUFError.typeMismatch(key: key, expected: "array[string]", found: v.typeName)
        }
        return vals.map { $0.stringValue ?? "" }
    }

    public func intArray(_ key: String) throws -> [Int] {
        let v = try value(key)
        guard case let .array(_, vals) = v else {
            throw GGUFError.typeMismatch(key: key, expected: "array[integer]", found: v.typeName)
        }
        var out: [Int] = []
        out.reserveCapacity(vals.count)
        for x in vals {
            guard let i = x.intValue else {
                throw GGUFError.typeMismatch(key: key, expected: "array[integer]", found: v.typeName)
            }
            out.append(i)
        }
        return out
    }
}

/// Bounds-checked little-endian reader over the file image.
struct ByteReader {
    let buffer: UnsafeRawBufferPointer
    var offset: Int = 0

    init(buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    @inline(__always)
    mutating func need(_ n: Int, _ field: @autoclosure () -> String) throws {
        if n > buffer.count - offset {
            throw GGUFError.truncated(field: field(), offset: offset, needed: n, fileSize: buffer.count)
        }
    }

    mutating func load<T: FixedWidthInteger>(_ t: T.Type, _ field: @autoclosure () -> String) throws -> T {
        try need(MemoryLayout<T>.size, field())
        let v = buffer.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    mutating func u32(_ field: @autoclosure () -> String) throws -> UInt32 { try load(UInt32.self, field()) }
    mutating func u64(_ field: @autoclosure () -> String) throws -> UInt64 { try load(UInt64.self, field()) }

    mutating func string(_ field: @autoclosure () -> String) throws -> String {
        let lenOff = offset
        let len = try u64("\(field()) length")
        guard len <= UInt64(buffer.count - offset) else {
            throw GGUFError.badStringLength(field: field(), offset: lenOff, length: len, fileSize: buffer.count)
        }
        let n = Int(len)
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + n)]), as: UTF8.self)
        offset += n
        return s
    }

    mutating func value(type: GGUFValueType, field: @autoclosure () -> String, depth: Int = 0) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try load(UInt8.self, field()))
        case .int8: return .int8(try load(Int8.self, field()))
        case .uint16: return .uint16(try load(UInt16.self, field()))
        case .int16: return .int16(try load(Int16.self, field()))
        case .uint32: return .uint32(try load(UInt32.self, field()))
        case .int32: return .int32(try load(Int32.self, field()))
        case .uint64: return .uint64(try load(UInt64.self, field()))
        case .int64: return .int64(try load(Int64.self, field()))
        case .float32: return .float32(Float(bitPattern: try load(UInt32.self, field())))
        case .float64: return .float64(Double(bitPattern: try load(UInt64.self, field())))
        case .bool:
            let off = offset
            let b = try load(UInt8.self, field())
            guard b <= 1 else { throw GGUFError.badValueType(field: "\(field()) (bool byte \(b))", offset: off, typeID: 7) }
            return .bool(b != 0)
        case .string: return .string(try string(field()))
        case .array:
            let typeOff = offset
            let etID = try u32("\(field()) element type")
            guard let et = GGUFValueType(rawValue: etID) else {
                throw GGUFError.badValueType(field: "\(field()) element type", offset: typeOff, typeID: etID)
            }
            guard depth < 8 else {
                throw GGUFError.badCount(field: "\(field()) nesting depth", offset: typeOff, count: UInt64(depth))
            }
            let countOff = offset
            let count = try u64("\(field()) count")
            guard count <= UInt64((buffer.count - offset) / et.minimumEncodedSize) else {
                throw GGUFError.badCount(field: "\(field()) count", offset: countOff, count: count)
            }
            var vals: [GGUFValue] = []
            vals.reserveCapacity(Int(count))
            for j in 0..<Int(count) {
                vals.append(try value(type: et, field: "\(field())[\(j)]", depth: depth + 1))
            }
            return .array(elementType: et, values: vals)
        }
    }
}
