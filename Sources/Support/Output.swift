#if canImport(Glibc)
import Glibc
#endif

/// Progress and summaries go to standard error, generated text and results to standard output. These writes are
/// unbuffered: a trap must not swallow what was written before it.

/// A line to standard error.
public func printErr(_ s: String) { write(fd: 2, s + "\n") }

/// Text to standard output, as it is (no newline added).
public func writeOut(_ s: String) { write(fd: 1, s) }

/// A line to standard output.
public func say(_ line: String) { writeOut(line + "\n") }

private func write(fd: Int32, _ s: String) {
    var text = s
    text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n <= 0 { return }
            offset += n
        }
    }
}
