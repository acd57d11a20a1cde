#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A problem with one file of an HF model directory (config.json, tokenizer.json, a .safetensors file, the shard
/// index): which file, which field or tensor, what is wrong.
public struct ModelFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    /// The JSON field, tensor name or header part the problem is about.
    public let field: String
    public let reason: String

    public init(path: String, field: String, reason: String) {
        self.path = path
        self.field = field
        self.reason = reason
    }

    public var description: String { "\(path): \(field): \(reason)" }
}

/// A whole file mapped read-only (an empty file is an empty buffer). Weights stay in the page cache and are never
/// copied unless a tensor needs its rows reordered.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)  // a FIFO must not block the open
        if fd < 0 { throw ModelFileError(path: path, field: "file", reason: "cannot open (\(Self.errnoText(errno)))") }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw ModelFileError(path: path, field: "file", reason: "fstat failed (\(Self.errnoText(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw ModelFileError(path: path, field: "file", reason: "not a regular file")
        }
        let size = Int(st.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw ModelFileError(path: path, field: "file", reason: "mmap failed (\(Self.errnoText(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(p), count: size)
    }

    deinit {
        if let base = bytes.baseAddress, bytes.count > 0 { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    /// Parses the file as one JSON document; a syntax error names the file and byte.
    public func json() throws -> JSONValue {
        do {
            return try JSONValue.parse(bytes)
        } catch let e as JSONError {
            throw ModelFileError(path: path, field: "JSON", reason: e.description)
        }
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }
}
