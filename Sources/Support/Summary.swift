/// Sample summaries for the reports and the JSON results of the benches (Codable, no Foundation needed).

/// Percentiles of a sample (nearest rank). In JSON: count, p50, p99, max, mean, rounded to 3 decimals.
public struct Summary: Codable, Sendable {
    public let count: Int
    public let p50: Double
    public let p99: Double
    public let max: Double
    public let mean: Double

    public init(_ values: [Double]) {
        let s = values.sorted()
        count = s.count
        func rank(_ q: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int((q * Double(s.count)).rounded(.up)) - 1 < 0 ? 0 : Int((q * Double(s.count)).rounded(.up)) - 1)] }
        p50 = rank(0.5)
        p99 = rank(0.99)
        max = s.last ?? 0
        mean = s.isEmpty ? 0 : s.reduce(0, +) / Double(s.count)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(count, forKey: .count)
        try c.encode(Rounded(p50), forKey: .p50)
        try c.encode(Rounded(p99), forKey: .p99)
        try c.encode(Rounded(max), forKey: .max)
        try c.encode(Rounded(mean), forKey: .mean)
    }
}

/// A number as the bench results write it: rounded to a few decimals, null when it is not finite (a rate over no
/// time), and always present.
public struct Rounded: Codable, Sendable, Equatable {
    public let value: Double?

    public init(_ x: Double, _ digits: Int = 3) {
        var p = 1.0
        for _ in 0..<digits { p *= 10 }
        value = x.isFinite ? (x * p).rounded() / p : nil
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        value = c.decodeNil() ? nil : try c.decode(Double.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if let value { try c.encode(value) } else { try c.encodeNil() }
    }
}
