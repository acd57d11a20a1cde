import Support

/// Minimal SVG line charts for benchmark reports (no dependencies): a few series over a shared x axis. The benches
/// write their pictures with it beside their JSON (`svgPath`), on whatever machine they run.
struct SVGChart {
    struct Series {
        var name: String
        var points: [(x: Double, y: Double)]
    }

    var title: String
    var xLabel: String
    var yLabel: String
    var series: [Series]
    var logX = false
    var logY = false

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    /// One chart as an SVG group at (ox, oy), `w`×`h` pixels.
    func render(x ox: Double, y oy: Double, width w: Double, height h: Double) -> String {
        let all = series.flatMap(\.points)
        guard !all.isEmpty else { return "" }
        let tr: (Double) -> Double = { logY ? log10(max($0, 1e-9)) : $0 }
        let trx: (Double) -> Double = { logX ? log10(max($0, 1e-9)) : $0 }
        let xs = all.map { trx($0.x) }, ys = all.map { tr($0.y) }
        let (x0, x1) = (xs.min()!, max(xs.max()!, xs.min()! + 1e-9))
        let (y0, y1) = (min(ys.min()!, logY ? ys.min()! : 0), max(ys.max()!, ys.min()! + 1e-9))
        let left = ox + 60, right = ox + w - 10, top = oy + 30, bottom = oy + h - 40
        func px(_ x: Double) -> Double { left + (trx(x) - x0) / (x1 - x0) * (right - left) }
        func py(_ y: Double) -> Double { bottom - (tr(y) - y0) / (y1 - y0) * (bottom - top) }
        var s = "<g font-family=\"sans-serif\" font-size=\"11\">\n"
        s += "<text x=\"\(ox + w / 2)\" y=\"\(oy + 16)\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(escape(title))</text>\n"
        s += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(right - left)\" height=\"\(bottom - top)\" fill=\"none\" stroke=\"#999\"/>\n"
        for i in 0...4 {
            let fy = y0 + (y1 - y0) * Double(i) / 4
            let yv = logY ? pow(10, fy) : fy
            let yy = bottom - Double(i) / 4 * (bottom - top)
            s += "<line x1=\"\(left)\" y1=\"\(yy)\" x2=\"\(right)\" y2=\"\(yy)\" stroke=\"#eee\"/>"
            s += "<text x=\"\(left - 4)\" y=\"\(yy + 4)\" text-anchor=\"end\">\(short(yv))</text>\n"
            let fx = x0 + (x1 - x0) * Double(i) / 4
            let xv = logX ? pow(10, fx) : fx
            let xx = left + Double(i) / 4 * (right - left)
            s += "<text x=\"\(xx)\" y=\"\(bottom + 14)\" text-anchor=\"middle\">\(short(xv))</text>\n"
        }
        s += "<text x=\"\((left + right) / 2)\" y=\"\(bottom + 30)\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        s += "<text x=\"\(ox + 12)\" y=\"\((top + bottom) / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 \(ox + 12) \((top + bottom) / 2))\">\(escape(yLabel))</text>\n"
        for (i, serie) in series.enumerated() {
            let color = SVGChart.colors[i % SVGChart.colors.count]
            let path = serie.points.map { "\(fmt(px($0.x), 1)),\(fmt(py($0.y), 1))" }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.2\" points=\"\(path)\"/>\n"
            s += "<rect x=\"\(left + 8)\" y=\"\(top + 6 + Double(i) * 14)\" width=\"10\" height=\"3\" fill=\"\(color)\"/>"
            s += "<text x=\"\(left + 22)\" y=\"\(top + 11 + Double(i) * 14)\">\(escape(serie.name))</text>\n"
        }
        return s + "</g>\n"
    }

    /// Several charts stacked into one SVG document.
    static func document(_ charts: [SVGChart], width: Double = 760, height: Double = 260) -> String {
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height * Double(charts.count))\" "
        s += "viewBox=\"0 0 \(width) \(height * Double(charts.count))\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        for (i, c) in charts.enumerated() { s += c.render(x: 0, y: Double(i) * height, width: width, height: height) }
        return s + "</svg>\n"
    }

    /// Empirical CDF points of a sample.
    static func cdf(_ values: [Double]) -> [(x: Double, y: Double)] {
        let s = values.sorted()
        return s.enumerated().map { (x: $1, y: Double($0 + 1) / Double(s.count)) }
    }
}

/// Where a bench writes the picture of its JSON result: the same path, .svg for .json.
func svgPath(_ jsonPath: String) -> String {
    (jsonPath.hasSuffix(".json") ? String(jsonPath.dropLast(5)) : jsonPath) + ".svg"
}

private func short(_ v: Double) -> String {
    let a = abs(v)
    if a >= 1e9 { return fmt(v / 1e9, 1) + "G" }
    if a >= 1e6 { return fmt(v / 1e6, 1) + "M" }
    if a >= 1e4 { return fmt(v / 1e3, 0) + "k" }
    if a >= 10 || a == 0 { return fmt(v, 0) }
    return fmt(v, 2)
}

private func escape(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        default: out.append(c)
        }
    }
    return out
}

#if canImport(Glibc)
import Glibc
#endif
