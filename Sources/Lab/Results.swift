import FoundationEssentials
import Support
#if canImport(Glibc)
import Glibc
#endif

extension Optional where Wrapped == Rounded {
    /// nil as an explicit null (a plain optional property would leave its key out).
    var orNull: Rounded { self ?? Rounded(.nan) }
}

/// A bench's or check's failure, said in words (like `vattn`'s own errors: "Error: …", exit status 1).
public struct LabError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A bad option value found only when the bench runs (an unknown shape name, a model not in the cache): `vattn`
/// reports it as a usage error, with the command's usage.
public struct LabUsageError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// `value` as JSON (sorted keys, indented, newline at the end) in the file at `path`.
func writeJSON(_ value: some Encodable, to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    try writeText(String(decoding: try encoder.encode(value), as: UTF8.self) + "\n", to: path)
}

/// One line of JSON (sorted keys), for JSON-lines files.
func jsonLine(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
}

func writeText(_ text: String, to path: String) throws {
    guard let f = fopen(path, "w") else { throw LabError("cannot write \(path)") }
    fputs(text, f)
    fclose(f)
}
