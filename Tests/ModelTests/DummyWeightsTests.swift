import Testing
@testable import Model

@Suite("Dummy weights: the documented seeded formula")
struct DummyWeightsTests {
    static let tiny = LlamaHyperparameters(blockCount: 2, embeddingLength: 64, feedForwardLength: 96, headCount: 4,
                                           headCountKV: 2, headDim: 16, contextLength: 128, vocabSize: 300,
                                           ropeFreqBase: 10000, rmsNormEpsilon: 1e-5, tiedEmbeddings: false)

    @Test("nameHash is FNV-1a 64 (published test vectors)")
    func fnv() {
        #expect(DummyWeights.nameHash("") == 0xcbf2_9ce4_8422_2325)
        #expect(DummyWeights.nameHash("a") == 0xaf63_dc4c_8601_ec8c)
        #expect(DummyWeights.nameHash("foobar") == 0x8594_4171_f739_67e8)
    }

    @Test("values: uniform in ±1/√rowLength, mean ≈ 0, spread ≈ uniform's, deterministic, seed- and name-dependent")
    func statistics() throws {
        let w = DummyWeights(hyperparameters: Self.tiny, seed: 42)
        let t = try w.tensor("blk.0.ffn_down.weight")  // 64 rows of 96
        #expect(t.type == .f32 && t.rowCount == 64 && t.rowLength == 96)
        let values = (0..<t.rowCount).flatMap { t.dequantizeRow($0) }
        let bound = 1 / Float(96).squareRoot()
        #expect(values.allSatisfy { abs($0) <= bound })
        let n = Double(values.count)
        let mean = values.reduce(0.0) { $0 + Double($1) } / n
        let variance = values.reduce(0.0) { $0 + Double($1) * Double($1) } / n - mean * mean
        // Uniform on [-b, b]: mean 0 (σ/√n ≈ 0.0006 here), variance b²/3.
        #expect(abs(mean) < 0.003, "mean \(mean)")
        #expect(abs(variance / (Double(bound * bound) / 3) - 1) < 0.05, "variance \(variance)")
        #expect(values.max()! > 0.95 * bound && values.min()! < -0.95 * bound)

        // Same seed, same values (fresh object); another seed or another name, other values.
        let again = try DummyWeights(hyperparameters: Self.tiny, seed: 42).tensor("blk.0.ffn_down.weight")
        #expect((0..<64).allSatisfy { again.dequantizeRow($0) == t.dequantizeRow($0) })
        let otherSeed = try DummyWeights(hyperparameters: Self.tiny, seed: 43).tensor("blk.0.ffn_down.weight")
        let otherName = try w.tensor("blk.1.ffn_down.weight")
        for other in [otherSeed, otherName] {
            let o = (0..<64).flatMap { other.dequantizeRow($0) }
            #expect(zip(o, values).filter { $0 == $1 }.count < values.count / 100)
        }
        // The tensor is element `index` of the formula, row-major.
        #expect(t.dequantizeRow(3)[5] == DummyWeights.value(seed: 42, nameHash: DummyWeights.nameHash("blk.0.ffn_down.weight"),
                                                            index: 3 * 96 + 5, rowLength: 96))
        // Cached: the same storage on the second access.
        #expect(try w.tensor("blk.0.ffn_down.weight").data.baseAddress == t.data.baseAddress)
    }

    @Test("norms are 1, shapes are llama.cpp's, unknown names are missing")
    func shapesAndNorms() throws {
        let w = DummyWeights(hyperparameters: Self.tiny)
        for name in ["output_norm.weight", "blk.1.attn_norm.weight", "blk.0.ffn_norm.weight"] {
            let t = try w.tensor(name)
            #expect(t.rowCount == 1 && t.dequantizeRow(0) == Array(repeating: 1, count: 64))
        }
        let expected: [String: (Int, Int)] = [
            "token_embd.weight": (300, 64), "output.weight": (300, 64), "blk.0.attn_q.weight": (64, 64),
            "blk.0.attn_k.weight": (32, 64), "blk.0.attn_v.weight": (32, 64), "blk.0.attn_output.weight": (64, 64),
            "blk.1.ffn_gate.weight": (96, 64), "blk.1.ffn_up.weight": (96, 64), "blk.1.ffn_down.weight": (64, 96),
        ]
        for (name, (rows, cols)) in expected {
            let t = try w.tensor(name)
            #expect(t.rowCount == rows && t.rowLength == cols, "\(name)")
        }
        #expect(!w.hasTensor("blk.2.attn_q.weight") && !w.hasTensor("rope_freqs.weight"))
        #expect(throws: WeightsError.self) { try w.tensor("blk.2.attn_q.weight") }
        var tied = Self.tiny
        tied.tiedEmbeddings = true
        #expect(!DummyWeights(hyperparameters: tied).hasTensor("output.weight"))
    }

    @Test("known shapes: Llama-3-8B and Yi-6B as published")
    func knownShapes() throws {
        let llama = try #require(DummyWeights.knownShape("llama-3-8b"))
        #expect(llama.blockCount == 32 && llama.embeddingLength == 4096 && llama.headCount == 32 && llama.headCountKV == 8)
        #expect(llama.headDim == 128 && llama.feedForwardLength == 14336 && llama.vocabSize == 128_256)
        #expect(llama.ropeFreqBase == 500_000 && llama.rmsNormEpsilon == 1e-5)
        let yi = try #require(DummyWeights.knownShape("Yi-6B"))
        #expect(yi.headCountKV == 4 && yi.feedForwardLength == 11008 && yi.vocabSize == 64000 && yi.ropeFreqBase == 5_000_000)
        #expect(DummyWeights.knownShape("gpt-5") == nil)
    }

    @Test("the smollm2-135m shape is the real model's", .enabled(if: Support.runModelTests))
    func smolShapeMatchesModel() throws {
        let real = try LlamaHyperparameters(file: Support.model())
        #expect(DummyWeights.knownShape("smollm2-135m") == real)
    }
}
