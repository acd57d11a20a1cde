import Model
import Randomness
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

/// Uniform in [0, 1).
private func unit(_ random: inout SplitMix64) -> Double { Double(random.next() >> 11) / Double(1 << 53) }

/// The integer kernels of every instruction set this CPU runs, forced one at a time, against float64 references.
@Suite("Integer matmul kernels")
struct IntegerMatmulTests {
    static let instructionSets = CPUInstructionSet.allCases.filter(\.isSupported)
    static let formats: [GGMLType] = [.q4_0, .q4_1, .q8_0]

    /// Random bytes in `type`'s block layout: scales (and Q4_1 minimums) are halves of varied magnitude.
    static func randomWeights(_ type: GGMLType, rows: Int, k: Int, seed: UInt64) -> WeightTensor {
        var random = SplitMix64(seed: seed)
        let blockBytes = type.byteCount(elements: 32), blocks = rows * k / 32
        let storage = TensorStorage(byteCount: blocks * blockBytes)
        let p = storage.pointer
        func half(_ x: Float) -> UInt16 { Float16(x).bitPattern }
        for b in 0..<blocks {
            let block = p + b * blockBytes
            let scale = Float(unit(&random) * 0.02 + 0.0005) * (random.next() % 2 == 0 ? 1 : -1)
            block.storeBytes(of: half(scale), as: UInt16.self)
            var quants = 2
            if type == .q4_1 {
                block.storeBytes(of: half(Float(unit(&random) - 0.5) * 0.1), toByteOffset: 2, as: UInt16.self)
                quants = 4
            }
            for j in quants..<blockBytes { block.storeBytes(of: UInt8(truncatingIfNeeded: random.next()), toByteOffset: j, as: UInt8.self) }
        }
        return WeightTensor(name: "w", type: type, rowLength: k, rowCount: rows, data: storage.bytes, owner: storage)
    }

    static func randomInput(tokens: Int, k: Int, seed: UInt64) -> [Float] {
        var random = SplitMix64(seed: seed)
        // Blocks of very different magnitudes, and an all-zero block (scale 0).
        return (0..<(tokens * k)).map { i in
            let block = i / 32
            if block % 7 == 3 { return 0 }
            return Float(unit(&random) * 2 - 1) * Float(1 << (block % 5))
        }
    }

    /// y via the given path, `tokens` rows at once.
    static func run(_ w: WeightTensor, _ x: [Float], tokens: Int, _ isa: CPUInstructionSet, residual: Bool) -> [Float] {
        let linear = Linear(w, .integer(isa, residual ? .int16 : .int8))
        let scratch = QuantizedRows(capacity: tokens * w.rowLength)
        defer { scratch.free() }
        var y = [Float](repeating: .nan, count: tokens * w.rowCount)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { Engine.multiply(linear, xp.baseAddress!, tokens: tokens, $0.baseAddress!, quantized: scratch) }
        }
        return y
    }

    /// The activation quantization the kernels see, in float64: x ≈ d·q (+ d·residual/128) per block.
    static func quantizedInput(_ x: [Float], tokens: Int, k: Int, residual: Bool) -> [Double] {
        let scratch = QuantizedRows(capacity: tokens * k)
        defer { scratch.free() }
        let a = x.withUnsafeBufferPointer { scratch.quantize($0.baseAddress!, k: k, tokens: tokens, residual: residual) }
        return (0..<(tokens * k)).map { i in
            let q = Double(a.qs[i]) + (residual ? Double(a.residual![i]) / 128 : 0)
            return q * Double(a.d[i / 32])
        }
    }

    @Test("activation rows: |q| ≤ 127, x within d/2 of d·q (d/256 of d·(q + r/128)), block sums = d·Σ",
          arguments: [32, 96, 576])
    func quantizeRows(k: Int) {
        let tokens = 3
        let x = Self.randomInput(tokens: tokens, k: k, seed: 7)
        let scratch = QuantizedRows(capacity: tokens * k)
        defer { scratch.free() }
        for residual in [false, true] {
            let a = x.withUnsafeBufferPointer { scratch.quantize($0.baseAddress!, k: k, tokens: tokens, residual: residual) }
            for b in 0..<(tokens * k / 32) {
                let d = a.d[b]
                let amax = x[(32 * b)..<(32 * b + 32)].map(abs).max()!
                #expect(d == amax / 127)
                var total = 0
                for j in (32 * b)..<(32 * b + 32) {
                    #expect(abs(Int(a.qs[j])) <= 127)
                    let r = residual ? Int(a.residual![j]) : 0
                    #expect(abs(r) <= 64)
                    let value = Double(d) * (Double(a.qs[j]) + Double(r) / 128)
                    #expect(abs(Double(x[j]) - value) <= Double(d) / (residual ? 256 : 2) * (1 + 1e-4))
                    total += residual ? 128 * Int(a.qs[j]) + r : Int(a.qs[j])
                }
                #expect(a.sum[b] == (residual ? d * Float(total) / 128 : d * Float(total)))
            }
        }
    }

    /// Against Σ dequant(w)·(quantized x) in float64 the only error is float32 accumulation: ≤ 1e-5 of Σ|w·x|.
    /// Against the unquantized input the activations' rounding adds at most Σ|w|·d/2 per block (d/256 with
    /// residuals).
    @Test("every instruction set, every format, 8 and 16 bits, against float64", arguments: formats)
    func againstFloat64(type: GGMLType) {
        let rows = 13, tokens = 6
        for k in [32, 96, 576] {
            let w = Self.randomWeights(type, rows: rows, k: k, seed: UInt64(k))
            let x = Self.randomInput(tokens: tokens, k: k, seed: UInt64(k) + 1)
            let weights = (0..<rows).map { w.dequantizeRow($0).map(Double.init) }
            let blockScale = (0..<(tokens * k / 32)).map { b in Double(x[(32 * b)..<(32 * b + 32)].map(abs).max()!) / 127 }
            for residual in [false, true] {
                let xq = Self.quantizedInput(x, tokens: tokens, k: k, residual: residual)
                for isa in Self.instructionSets {
                    let y = Self.run(w, x, tokens: tokens, isa, residual: residual)
                    for t in 0..<tokens {
                        for r in 0..<rows {
                            var exact = 0.0, magnitude = 0.0, rounding = 0.0, unquantized = 0.0
                            for j in 0..<k {
                                let wj = weights[r][j], i = t * k + j
                                exact += wj * xq[i]
                                magnitude += abs(wj * xq[i])
                                rounding += abs(wj) * blockScale[i / 32] / (residual ? 256 : 2)
                                unquantized += wj * Double(x[i])
                            }
                            let got = Double(y[t * rows + r])
                            let what: Comment = "\(isa) \(type) residual \(residual) k \(k) row \(r) token \(t)"
                            #expect(abs(got - exact) <= 1e-5 * magnitude + 1e-30, what)
                            #expect(abs(got - unquantized) <= rounding * (1 + 1e-4) + 1e-5 * magnitude, what)
                        }
                    }
                }
            }
        }
    }

    @Test("a token's result does not depend on its batch: every batch size and row range, bit for bit", arguments: formats)
    func batchInvariant(type: GGMLType) {
        let rows = 37, k = 96, most = 9
        let w = Self.randomWeights(type, rows: rows, k: k, seed: 11)
        let x = Self.randomInput(tokens: most, k: k, seed: 12)
        for isa in Self.instructionSets {
            for residual in [false, true] {
            let alone = (0..<most).map { t in
                Self.run(w, Array(x[(t * k)..<((t + 1) * k)]), tokens: 1, isa, residual: residual)
            }
            for tokens in 1...most {
                let batched = Self.run(w, Array(x[0..<(tokens * k)]), tokens: tokens, isa, residual: residual)
                for t in 0..<tokens {
                    #expect(Array(batched[(t * rows)..<((t + 1) * rows)]) == alone[t],
                            "\(isa) \(type) residual \(residual): \(tokens) tokens, token \(t)")
                }
            }
            }
        }
    }

    @Test("instruction sets agree with each other within float32 accumulation error")
    func instructionSetsAgree() {
        for type in Self.formats {
            let w = Self.randomWeights(type, rows: 8, k: 1536, seed: 5)
            let x = Self.randomInput(tokens: 5, k: 1536, seed: 6)
            for residual in [false, true] {
                let results = Self.instructionSets.map { Self.run(w, x, tokens: 5, $0, residual: residual) }
                for y in results.dropFirst() {
                    for (a, b) in zip(results[0], y) { #expect(abs(a - b) <= 1e-4 * max(1, abs(a)), "\(type)") }
                }
            }
        }
    }

    @Test("every instruction set quantizes activations to the portable code's bytes and floats", arguments: [32, 96, 576, 1536])
    func quantizationIsTheSameEverywhere(k: Int) {
        let tokens = 5
        var x = Self.randomInput(tokens: tokens, k: k, seed: UInt64(k))
        for j in 0..<32 { x[j] = j == 0 ? 127 : Float(j) - 16.5 }  // scale 1: halves, ties to even
        for residual in [false, true] {
            func bytes(_ isa: CPUInstructionSet) -> ([Int8], [Int8], [UInt32], [UInt32]) {
                let scratch = QuantizedRows(capacity: tokens * k)
                defer { scratch.free() }
                let a = x.withUnsafeBufferPointer {
                    scratch.quantize($0.baseAddress!, k: k, tokens: tokens, residual: residual, instructionSet: isa)
                }
                let n = tokens * k, blocks = n / 32
                return ((0..<n).map { a.qs[$0] }, residual ? (0..<n).map { a.residual![$0] } : [],
                        (0..<blocks).map { a.d[$0].bitPattern }, (0..<blocks).map { a.sum[$0].bitPattern })
            }
            let portable = bytes(.portable)
            for isa in Self.instructionSets.dropFirst() {
                let got = bytes(isa)
                #expect(got.0 == portable.0 && got.1 == portable.1, "\(isa) k \(k) residual \(residual): quants")
                #expect(got.2 == portable.2 && got.3 == portable.3, "\(isa) k \(k) residual \(residual): scales, sums")
            }
        }
    }

    @Test("the best instruction set is supported, and portable always is")
    func dispatch() {
        #expect(CPUInstructionSet.best.isSupported && CPUInstructionSet.portable.isSupported)
        #expect(CPUInstructionSet.allCases.filter(\.isSupported).last == CPUInstructionSet.best)
    }
}
