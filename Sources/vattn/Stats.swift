#if canImport(Glibc)
import Glibc
#endif

func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Percentiles of a sample (nearest rank).
struct Summary {
    let count: Int
    let p50: Double
    let p99: Double
    let max: Double
    let mean: Double

    init(_ values: [Double]) {
        let s = values.sorted()
        count = s.count
        func rank(_ q: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int((q * Double(s.count)).rounded(.up)) - 1 < 0 ? 0 : Int((q * Double(s.count)).rounded(.up)) - 1)] }
        p50 = rank(0.5)
        p99 = rank(0.99)
        max = s.last ?? 0
        mean = s.isEmpty ? 0 : s.reduce(0, +) / Double(s.count)
    }

    var json: String { "{\"count\": \(count), \"p50\": \(fmt(p50)), \"p99\": \(fmt(p99)), \"max\": \(fmt(max)), \"mean\": \(fmt(mean))}" }
}

func fmt(_ x: Double, _ digits: Int = 3) -> String {
    if x.isNaN || x.isInfinite { return "null" }
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let r = (x * p).rounded() / p
    return "\(r)"
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

func jsonString(_ s: String) -> String {
    var out = "\""
    for c in s.unicodeScalars {
        switch c {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        default: if c.value < 0x20 { out += "\\u00\(String(c.value, radix: 16))" } else { out.unicodeScalars.append(c) }
        }
    }
    return out + "\""
}

func writeText(_ text: String, to path: String) throws {
    guard let f = fopen(path, "w") else { throw ValidationErrorText("cannot write \(path)") }
    fputs(text, f)
    fclose(f)
}

struct ValidationErrorText: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
