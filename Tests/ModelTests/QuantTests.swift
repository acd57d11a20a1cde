import Foundation
import Randomness
import Testing
@testable import Model

@Suite("Dequantization and quantized dot")
struct QuantTests {
    @Test("all six types vs the gguf package's dequantize (synthetic file)")
    func syntheticDequant() throws {
        let f = try GGUFFile(path: Support.fixture("synthetic.gguf"))
        let fx = try SyntheticFixture.get()
        #expect(fx.tensors.count == 6)
        for t in fx.tensors {
            let tensor = try f.tensor(named: t.name)
            #expect(tensor.type.description == t.type)
            #expect(tensor.rowCount == t.rows && tensor.rowLength == t.row_length)
            for r in 0..<t.rows {
                let got = tensor.dequantizeRow(r)
                let bad = zip(got, t.values[r]).filter { !close($0, $1, rel: 1e-6) }
                #expect(bad.isEmpty, "\(t.name) row \(r): \(bad.prefix(3))")
            }
        }
    }

    @Test("quantized dot equals float64 dot of dequantized values (synthetic, all types)")
    func syntheticDot() throws {
        let f = try GGUFFile(path: Support.fixture("synthetic.gguf"))
        var rng = SplitMix64(seed: 7)
        for info in f.tensors {
            let t = GGUFTensor(file: f, info: info)
            let x = (0..<t.rowLength).map { _ in rng.nextSignedUnitFloat() }
            for r in 0..<t.rowCount { try checkDot(t, row: r, x: x) }
        }
    }

    @Test("half and bfloat16 conversion")
    func halfConversion() {
        #expect(Quant.halfToFloat(0x3C00) == 1)
        #expect(Quant.halfToFloat(0xC000) == -2)
        #expect(Quant.halfToFloat(0x7BFF) == 65504)
        #expect(Quant.halfToFloat(0x0001) == 5.9604644775390625e-08)  // smallest subnormal
        #expect(Quant.halfToFloat(0x7C00) == .infinity)
        #expect(Quant.halfToFloat(0x7E00).isNaN)
        #expect(Quant.halfToFloat(0x8000).sign == .minus)
        for bits in stride(from: 0, through: 0xFFFF, by: 7) {
            let h = UInt16(bits)
            let ref = Float(Float16(bitPattern: h))
            let got = Quant.halfToFloat(h)
            #expect(got == ref || (got.isNaN && ref.isNaN))
        }
        #expect(Quant.bf16ToFloat(0x3F80) == 1)
        #expect(Quant.bf16ToFloat(0xC0A0) == -5)
    }

    // Rows of the real model vs the gguf package's dequantize.
    @Test("real model rows vs fixture (Q8_0, Q4_1, F32)",
          .enabled(if: Support.runModelTests, "SmolLM2 GGUF not in the ModelStore cache (bash scripts/fixtures/fetch_model.sh); CI=1 makes this a failure"))
    func realDequant() throws {
        let f = try Support.model()
        let rows = try ModelFixture.get().dequant
        #expect(Set(rows.map(\.type)) == ["Q8_0", "Q4_1", "F32"])
        for row in rows {
            let t = try f.tensor(named: row.tensor)
            #expect(t.type.description == row.type)
            #expect(t.rowLength == row.row_length)
            let got = t.dequantizeRow(row.row)
            let bad = zip(got, row.values).enumerated().filter { !close($0.element.0, $0.element.1, rel: 1e-6) }
            #expect(bad.isEmpty, "\(row.tensor)[\(row.row)]: first mismatches \(bad.prefix(3))")
        }
    }

    @Test("real model: quantized dot vs float64 dot",
          .enabled(if: Support.runModelTests, "SmolLM2 GGUF not in the ModelStore cache (bash scripts/fixtures/fetch_model.sh); CI=1 makes this a failure"))
    func realDot() throws {
        let f = try Support.model()
        var rng = SplitMix64(seed: 3)
        for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "blk.7.attn_v.weight", "output_norm.weight"] {
            let t = try f.tensor(named: name)
            let x = (0..<t.rowLength).map { _ in rng.nextSignedUnitFloat() }
            for r in Set([0, 1, t.rowCount / 2, t.rowCount - 1]) where r < t.rowCount { try checkDot(t, row: r, x: x) }
        }
        // matvec agrees with per-row dot.
        let t = try f.tensor(named: "blk.0.attn_k.weight")
        let x = (0..<t.rowLength).map { _ in rng.nextSignedUnitFloat() }
        let y = t.matvec(x)
        #expect(y.count == 192)
        #expect(y[5] == t.dot(row: 5, x))
    }

    func checkDot(_ t: GGUFTensor, row r: Int, x: [Float]) throws {
        let deq = t.dequantizeRow(r)
        var ref = 0.0, mag = 0.0
        for i in 0..<deq.count {
            ref += Double(deq[i]) * Double(x[i])
            mag += abs(Double(deq[i]) * Double(x[i]))
        }
        let got = Double(t.dot(row: r, x))
        // Float32 accumulation: error bounded by ~n·eps·Σ|a·x|; use a generous multiple.
        let tol = 1e-5 * mag + 1e-30
        #expect(abs(got - ref) <= tol, "\(t.name) row \(r): quantized dot \(got) vs float64 \(ref) (Σ|ax| \(mag))")
    }
}
