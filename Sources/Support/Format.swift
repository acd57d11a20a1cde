/// Numbers and columns for the text reports of the commands, benchmarks and checks.

/// "2.0 MiB"-style sizes for reports.
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(bytes)
    var i = 0
    while abs(v) >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
    if i == 0 { return "\(bytes) B" }
    let scaled = (v * 10).rounded() / 10
    return "\(scaled) \(units[i])"
}

/// `x` rounded to `digits` decimals ("null" for NaN and infinities).
public func fmt(_ x: Double, _ digits: Int = 3) -> String {
    if x.isNaN || x.isInfinite { return "null" }
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let r = (x * p).rounded() / p
    return "\(r)"
}

/// `x` in scientific notation with two decimals ("1.25e-3").
public func sci(_ x: Double) -> String {
    if x == 0 { return "0" }
    if x.isNaN { return "NaN" }
    var e = 0, m = x
    while m >= 10 { m /= 10; e += 1 }
    while m < 1 { m *= 10; e -= 1 }
    return "\(fmt(m, 2))e\(e)"
}

/// `value` left-aligned in a column of `width` characters (longer text is kept whole).
public func pad(_ value: some CustomStringConvertible, _ width: Int) -> String {
    let s = value.description
    return s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

/// `value` right-aligned in a column of `width` characters (longer text is kept whole).
public func lpad(_ value: some CustomStringConvertible, _ width: Int) -> String {
    let s = value.description
    return s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}
