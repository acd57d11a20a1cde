import Foundation
import Testing
@testable import Model

@Suite("GGUF reader")
struct GGUFTests {
    // Needs the real model: skipped (with this reason) when ModelStore has no copy, unless CI is set.
    @Test("real SmolLM2 file: header, hyperparameters, tensor types",
          .enabled(if: Support.runModelTests, "SmolLM2 GGUF not in the ModelStore cache (bash scripts/fixtures/fetch_model.sh); CI=1 makes this a failure"))
    func realFile() throws {
        let f = try Support.model()
        #expect(f.version == 3)
        #expect(f.tensors.count == 272)
        #expect(f.alignment == 32)
        #expect(try f.string("general.architecture") == "llama")
        let hp = try LlamaHyperparameters(file: f)
        #expect(hp.blockCount == 30)
        #expect(hp.embeddingLength == 576)
        #expect(hp.feedForwardLength == 1536)
        #expect(hp.headCount == 9)
        #expect(hp.headCountKV == 3)
        #expect(hp.headDim == 64)
        #expect(hp.vocabSize == 49152)
        #expect(hp.contextLength == 8192)
        #expect(hp.ropeFreqBase == 100000)
        #expect(abs(hp.rmsNormEpsilon - 1e-5) < 1e-9)
        #expect(hp.tiedEmbeddings)
        var counts: [GGMLType: Int] = [:]
        for t in f.tensors { counts[t.type, default: 0] += 1 }
        #expect(counts == [.q4_1: 210, .f32: 61, .q8_0: 1])
        let emb = try #require(f.tensorInfo(named: "token_embd.weight"))
        #expect(emb.dims == [576, 49152])
        #expect(emb.type == .q8_0)
        #expect(emb.rowCount == 49152 && emb.rowLength == 576)
        let q = try #require(f.tensorInfo(named: "blk.3.attn_q.weight"))
        #expect(q.type == .q4_1 && q.dims == [576, 576])
        // Every tensor lies inside the file and is aligned.
        for t in f.tensors {
            #expect(t.fileOffset % f.alignment == 0)
            #expect(t.fileOffset + t.byteCount <= f.fileSize)
        }
        #expect(try f.stringArray("tokenizer.ggml.tokens").count == 49152)
        #expect(try f.stringArray("tokenizer.ggml.merges").count == 48900)
        #expect(try ChatTemplate(file: f) == .chatML(defaultSystemPrompt:
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face"))
    }

    @Test("missing hyperparameter keys are reported by name")
    func missingKeys() throws {
        var w = GGUFWriter()
        w.kv("general.architecture", .string("llama"))
        w.kv("llama.block_count", .uint32(2))
        let f = try GGUFFile(bytes: w.bytes())
        #expect(throws: GGUFError.missingKey("llama.embedding_length")) { try LlamaHyperparameters(file: f) }
        var w2 = GGUFWriter()
        w2.kv("general.architecture", .string("llama"))
        w2.kv("llama.block_count", .string("thirty"))
        let f2 = try GGUFFile(bytes: w2.bytes())
        #expect(throws: GGUFError.typeMismatch(key: "llama.block_count", expected: "integer", found: "string")) {
            try LlamaHyperparameters(file: f2)
        }
    }

    @Test("synthetic file from the gguf package: every metadata type, alignment 64")
    func syntheticMetadata() throws {
        let f = try GGUFFile(path: Support.fixture("synthetic.gguf"))
        #expect(f.alignment == 64)
        #expect(f["test.u8"] == .uint8(200))
        #expect(f["test.i8"] == .int8(-100))
        #expect(f["test.u16"] == .uint16(60000))
        #expect(f["test.i16"] == .int16(-30000))
        #expect(f["test.u32"] == .uint32(4_000_000_000))
        #expect(f["test.i32"] == .int32(-2_000_000_000))
        #expect(f["test.u64"] == .uint64(18_000_000_000_000_000_000))
        #expect(f["test.i64"] == .int64(-9_000_000_000_000_000_000))
        #expect(f["test.f32"] == .float32(1.5))
        #expect(f["test.f64"] == .float64(-2.25))
        #expect(f["test.bool"] == .bool(true))
        #expect(f["test.string"] == .string("héllo ✓"))
        #expect(f["test.arr_i32"] == .array(elementType: .int32, values: [.int32(1), .int32(-2), .int32(3)]))
        #expect(try f.stringArray("test.arr_str") == ["a", "bc", ""])
        #expect(f["test.arr_nested"] == .array(elementType: .array, values: [
            .array(elementType: .int32, values: [.int32(1), .int32(2)]),
            .array(elementType: .int32, values: [.int32(3)]),
        ]))
        #expect(f["test.arr_f32"] == .array(elementType: .float32, values: [.float32(0.5), .float32(-1)]))
        #expect(f.tensors.map(\.type) == [.f32, .f16, .bf16, .q4_0, .q4_1, .q8_0])
        for t in f.tensors { #expect(t.fileOffset % 64 == 0) }
    }

    @Test("version 2 files are accepted, version 1 rejected")
    func versions() throws {
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: Support.fixture("synthetic.gguf"))))
        bytes[4] = 2
        let f = try GGUFFile(bytes: bytes)
        #expect(f.version == 2)
        bytes[4] = 1
        #expect(throws: GGUFError.unsupportedVersion(1)) { try GGUFFile(bytes: bytes) }
    }
}
