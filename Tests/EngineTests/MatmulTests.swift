import Testing
@testable import Engine

@Test("dot matches a float64 sum")
func dotProduct() {
    for n in [1, 15, 16, 17, 576, 1536] {
        let a = (0..<n).map { _ in Float.random(in: -1...1) }, b = (0..<n).map { _ in Float.random(in: -1...1) }
        let ref = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        #expect(abs(Double(dot(a, b, n)) - ref) < 1e-4)
    }
}
