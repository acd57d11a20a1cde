import Foundation
import Kernels
import Randomness
import Testing

/// The forward pass's float kernels (CFloatKernels) on every instruction set this CPU runs, against float64.
@Suite("Float kernels: exp, RMSNorm, RoPE, SiLU·mul")
struct FloatKernelTests {
    @Test("e^x within 3 ulp of float64 on [−87, 88]; 0 below −87.34 and at −inf; NaN stays NaN; e^0 = 1",
          arguments: instructionSets)
    func exponential(isa: CPUInstructionSet) {
        var (rng, seed) = makeRNG("exp \(isa)")
        // Odd count: the vector loop and the scalar tail.
        var x = randomFloats(4099, -87...88, &rng) + randomFloats(1001, -2...2, &rng)
        x += [0, -0.0, 1, -1, -87.3, 88.3, -87.34, -87.4, -100, -.infinity, .nan]
        var y = [Float](repeating: 7, count: x.count)
        FloatKernels(isa).exp(x, into: &y, count: x.count)
        for (xi, yi) in zip(x, y) {
            if xi.isNaN {
                #expect(yi.isNaN, "\(isa): e^NaN = \(yi)")
            } else if xi < -87.33654 {
                #expect(yi == 0, "seed \(seed) \(isa): e^\(xi) = \(yi)")
            } else {
                let ref = Foundation.exp(Double(xi))
                #expect(abs(Double(yi) - ref) <= 3 * Double(Float(ref).ulp),
                        "seed \(seed) \(isa): e^\(xi) = \(yi) vs \(ref)")
            }
        }
        #expect(y[x.firstIndex(of: 0)!] == 1)
    }

    @Test("RMSNorm: within 1e-6 of float64 relative to the row's largest output", arguments: instructionSets)
    func rmsNorm(isa: CPUInstructionSet) {
        var (rng, seed) = makeRNG("rmsnorm \(isa)")
        for width in [576, 64, 40, 13] {
            let rows = 5
            let x = randomFloats(rows * width, -3...3, &rng), weight = randomFloats(width, -2...2, &rng)
            var y = poisoned(rows * width)
            FloatKernels(isa).rmsNorm(x, rows: rows, width: width, weight: weight, epsilon: 1e-5, into: &y)
            for r in 0..<rows {
                let row = x[(r * width)..<((r + 1) * width)].map(Double.init)
                let inverse = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(width) + 1e-5).squareRoot()
                let ref = (0..<width).map { row[$0] * inverse * Double(weight[$0]) }
                let scale = ref.map(abs).max()!
                for j in 0..<width {
                    #expect(abs(Double(y[r * width + j]) - ref[j]) <= 1e-6 * scale,
                            "seed \(seed) \(isa) width \(width) row \(r) column \(j): \(y[r * width + j]) vs \(ref[j])")
                }
            }
            // Each row on its own gives the same bits.
            for r in 0..<rows {
                var alone = poisoned(width)
                x.withUnsafeBufferPointer {
                    FloatKernels(isa).rmsNorm($0.baseAddress! + r * width, rows: 1, width: width, weight: weight,
                                              epsilon: 1e-5, into: &alone)
                }
                #expect(alone.map(\.bitPattern) == y[(r * width)..<((r + 1) * width)].map(\.bitPattern),
                        "\(isa) row \(r)")
            }
        }
    }

    @Test("RoPE: the scalar rotation's bits (a·c − b·s, a·s + b·c) on the same float angle, within 1e-6 of float64",
          arguments: instructionSets)
    func rope(isa: CPUInstructionSet) {
        var (rng, seed) = makeRNG("rope \(isa)")
        for (headDim, heads) in [(64, 9), (128, 2), (40, 3), (8, 1)] {
            let frequencies = (0..<(headDim / 2)).map { Float(pow(10000, -2 * Double($0) / Double(headDim))) }
            for position in [0, 1, 17, 2047] {
                let x = randomFloats(heads * headDim, -2...2, &rng)
                var table = [Float](repeating: .nan, count: 2 * headDim)
                ropeTable(position: position, inverseFrequencies: frequencies, into: &table)
                var y = x
                FloatKernels(isa).rope(&y, heads: heads, headDim: headDim, cosSin: table)
                for h in 0..<heads {
                    for i in 0..<(headDim / 2) {
                        let angle = Float(position) * frequencies[i]
                        let c = cos(angle), s = sin(angle)
                        let a = x[h * headDim + 2 * i], b = x[h * headDim + 2 * i + 1]
                        let what: Comment = "seed \(seed) \(isa) d\(headDim) position \(position) head \(h) pair \(i)"
                        #expect(y[h * headDim + 2 * i] == a * c - b * s, what)
                        #expect(y[h * headDim + 2 * i + 1] == a * s + b * c, what)
                        let ra = Double(a) * Foundation.cos(Double(angle)) - Double(b) * Foundation.sin(Double(angle))
                        #expect(abs(Double(y[h * headDim + 2 * i]) - ra) <= 1e-6, what)
                    }
                }
            }
        }
    }

    @Test("SiLU·mul: within 4 ulp-ish (2e-6 relative) of float64, large |gate| included", arguments: instructionSets)
    func siluMul(isa: CPUInstructionSet) {
        var (rng, seed) = makeRNG("silu \(isa)")
        let gate = randomFloats(1531, -12...12, &rng) + [0, -0.0, 100, -100, 1e-8, -90, 90]
        let up = randomFloats(gate.count, -3...3, &rng)
        var y = gate
        FloatKernels(isa).siluMul(&y, up, count: gate.count)
        for i in gate.indices {
            let g = Double(gate[i])
            let ref = g / (1 + Foundation.exp(-g)) * Double(up[i])
            #expect(abs(Double(y[i]) - ref) <= 2e-6 * abs(ref) + 1e-30,
                    "seed \(seed) \(isa): silu(\(gate[i])) · \(up[i]) = \(y[i]) vs \(ref)")
        }
    }
}
