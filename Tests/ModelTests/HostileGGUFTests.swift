import Foundation
import Testing
@testable import Model

/// Files that lie about the model (issue 14): hyperparameters that disagree with the tensors, non-finite floats, and
/// paths that are not regular files. Each must be a typed error naming the key — never an allocation of the lie (a
/// block count of 10^9 was a 464 GB SIGABRT), a NaN model, or an open that waits for ever.
@Suite("Hostile GGUF files")
struct HostileGGUFTests {
    /// A tiny but consistent Llama: 2 blocks, d 32, 4 heads (2 KV) of 8, FFN 64, vocab 16, F32 tensors.
    static func tinyLlama(blockCount: UInt32 = 2, blocksWithTensors: Int = 2, embedding: UInt32 = 32,
                          ropeBase: Float? = 10000, rmsEps: Float = 1e-5, contextLength: UInt32 = 128) -> GGUFWriter {
        var w = GGUFWriter()
        w.kv("general.architecture", .string("llama"))
        w.kv("llama.block_count", .uint32(blockCount))
        w.kv("llama.embedding_length", .uint32(embedding))
        w.kv("llama.feed_forward_length", .uint32(64))
        w.kv("llama.attention.head_count", .uint32(4))
        w.kv("llama.attention.head_count_kv", .uint32(2))
        w.kv("llama.context_length", .uint32(contextLength))
        w.kv("llama.vocab_size", .uint32(16))
        w.kv("llama.attention.layer_norm_rms_epsilon", .float32(rmsEps))
        if let ropeBase { w.kv("llama.rope.freq_base", .float32(ropeBase)) }
        func f32(_ name: String, _ dims: [UInt64]) {
            let n = Int(dims.reduce(1, *))
            w.tensor(name, dims: dims, type: GGMLType.f32.rawValue, data: [UInt8](repeating: 0, count: 4 * n))
        }
        f32("token_embd.weight", [32, 16])
        f32("output_norm.weight", [32])
        for i in 0..<blocksWithTensors {
            f32("blk.\(i).attn_norm.weight", [32])
            f32("blk.\(i).attn_q.weight", [32, 32])
            f32("blk.\(i).attn_k.weight", [32, 16])
            f32("blk.\(i).ffn_gate.weight", [32, 64])
        }
        return w
    }

    static func weights(_ w: GGUFWriter) throws -> GGUFWeights { try GGUFWeights(file: GGUFFile(bytes: w.bytes())) }

    @Test func theTinyLlamaIsAccepted() throws {
        let hp = try Self.weights(Self.tinyLlama()).hyperparameters
        #expect(hp.blockCount == 2 && hp.headDim == 8 && hp.ropeFreqBase == 10000)
    }

    @Test("a block count that the blk.N tensors do not back", arguments: [UInt32(1_000_000_000), 3, 1])
    func blockCountMustMatchTheTensors(count: UInt32) throws {
        let e = try #require(throws: GGUFError.self) { try Self.weights(Self.tinyLlama(blockCount: count)) }
        guard case let .invalidValue(key, reason) = e else { Issue.record("\(e)"); return }
        #expect(key == "llama.block_count")
        #expect(reason.contains("is \(count)") && reason.contains("2 blocks"), "\(reason)")
    }

    @Test func aGapInTheBlocksIsRefused() throws {
        var w = Self.tinyLlama(blockCount: 3, blocksWithTensors: 2)
        w.tensor("blk.7.attn_norm.weight", dims: [32], type: GGMLType.f32.rawValue, data: [UInt8](repeating: 0, count: 128))
        #expect(throws: GGUFError.self) { try Self.weights(w) }
    }

    @Test func dimensionsMustMatchTheTensorShapes() throws {
        // embedding 64 (16 heads of 4 would also divide): the tensors are 32 wide.
        let e = try #require(throws: GGUFError.self) { try Self.weights(Self.tinyLlama(embedding: 64)) }
        #expect(e.description.contains("token_embd.weight") && e.description.contains("16 × 32"), "\(e)")
    }

    @Test("NaN, infinite, zero and negative rope_freq_base / rms_eps",
          arguments: [Float.nan, .infinity, -.infinity, 0, -1])
    func floatsMustBeFinitePositive(bad: Float) throws {
        let rope = try #require(throws: GGUFError.self) { try Self.weights(Self.tinyLlama(ropeBase: bad)) }
        guard case let .invalidValue(key, _) = rope else { Issue.record("\(rope)"); return }
        #expect(key == "llama.rope.freq_base")
        let eps = try #require(throws: GGUFError.self) { try Self.weights(Self.tinyLlama(rmsEps: bad)) }
        guard case let .invalidValue(key2, _) = eps else { Issue.record("\(eps)"); return }
        #expect(key2 == "llama.attention.layer_norm_rms_epsilon")
    }

    @Test func anAbsurdContextLengthIsRefused() throws {
        let e = try #require(throws: GGUFError.self) { try Self.weights(Self.tinyLlama(contextLength: 1 << 31)) }
        guard case let .invalidValue(key, _) = e else { Issue.record("\(e)"); return }
        #expect(key == "llama.context_length")
    }

    @Test("a FIFO named .gguf is refused at once, not waited on")
    func fifo() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vattn-fifo-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.gguf").path
        try #require(mkfifo(path, 0o600) == 0)
        #expect(throws: GGUFError.notARegularFile(path: path)) { try GGUFFile(path: path) }
        #expect(throws: ModelFileError.self) { try MappedFile(path: path) }
        // A directory too.
        #expect(throws: GGUFError.notARegularFile(path: dir.path)) { try GGUFFile(path: dir.path) }
    }
}
