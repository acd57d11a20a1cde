import Synchronization

/// Seeded random weights for any Llama shape, for throughput runs of models we do not have (Llama-3-8B, Yi-6B).
/// The values are a pure function of (seed, tensor name, element index), so a GPU kernel can generate the same
/// tensors on the device without a copy from the host. The formula (keep `value` and any kernel in step):
///
///     nameHash = FNV-1a 64 over the UTF-8 bytes of the GGUF name (basis 0xcbf29ce484222325, prime 0x100000001b3)
///     z = seed ^ nameHash
///     z = z &+ (index &+ 1) &* 0x9E3779B97F4A7C15          // index = row · rowLength + column
///     z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
///     z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
///     z = z ^ (z >> 31)
///     u = Float(z >> 40) / 16777216                         // [0, 1), exact in Float
///     value = (2u − 1) · (1 / sqrtf(Float(rowLength)))       // Float arithmetic, IEEE sqrt
///
/// for every 2-D tensor; norm weights (names ending "_norm.weight") are all 1. Shapes are llama.cpp's (see
/// `shape(of:)`). On the CPU tensors are F32, generated on first access and cached for the life of this object:
/// meant for small shapes (tests, smollm2-135m ≈ 0.5 GB); an 8B shape would need 32 GB.
public final class DummyWeights: LlamaWeights, @unchecked Sendable {
    public let hyperparameters: LlamaHyperparameters
    public let seed: UInt64
    private let cache = Mutex<[String: WeightTensor]>([:])

    public init(hyperparameters: LlamaHyperparameters, seed: UInt64 = 0) {
        self.hyperparameters = hyperparameters
        self.seed = seed
    }

    /// FNV-1a 64-bit over the UTF-8 bytes of `name`.
    public static func nameHash(_ name: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }

    /// Element `index` (= row · rowLength + column) of the 2-D tensor whose name hashes to `nameHash`.
    @inline(__always)
    public static func value(seed: UInt64, nameHash: UInt64, index: UInt64, rowLength: Int) -> Float {
        var z = seed ^ nameHash
        z = z &+ (index &+ 1) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z = z ^ (z >> 31)
        let u = Float(z >> 40) / 16_777_216
        return (2 * u - 1) * (1 / Float(rowLength).squareRoot())
    }

    /// (rowCount, rowLength) of a GGUF-named tensor of this Llama shape; nil for names a Llama does not have.
    public static func shape(of name: String, _ hp: LlamaHyperparameters) -> (rows: Int, rowLength: Int)? {
        let d = hp.embeddingLength, q = hp.headCount * hp.headDim, kv = hp.headCountKV * hp.headDim
        let ffn = hp.feedForwardLength
        switch name {
        case "token_embd.weight": return (hp.vocabSize, d)
        case "output.weight": return hp.tiedEmbeddings ? nil : (hp.vocabSize, d)
        case "output_norm.weight": return (1, d)
        default: break
        }
        let parts = name.split(separator: ".", maxSplits: 2)
        guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0, layer < hp.blockCount else {
            return nil
        }
        switch parts[2] {
        case "attn_norm.weight", "ffn_norm.weight": return (1, d)
        case "attn_q.weight": return (q, d)
        case "attn_k.weight", "attn_v.weight": return (kv, d)
        case "attn_output.weight": return (d, q)
        case "ffn_gate.weight", "ffn_up.weight": return (ffn, d)
        case "ffn_down.weight": return (d, ffn)
        default: return nil
        }
    }

    public func hasTensor(_ ggufName: String) -> Bool { Self.shape(of: ggufName, hyperparameters) != nil }

    public func tensor(_ ggufName: String) throws -> WeightTensor {
        guard let (rows, rowLength) = Self.shape(of: ggufName, hyperparameters) else {
            throw WeightsError.missingTensor(ggufName, in: "dummy weights")
        }
        return cache.withLock { cache in
            if let t = cache[ggufName] { return t }
            let storage = TensorStorage(byteCount: rows * rowLength * 4)
            let out = storage.pointer.bindMemory(to: Float.self, capacity: rows * rowLength)
            if ggufName.hasSuffix("_norm.weight") {
                out.initialize(repeating: 1, count: rows * rowLength)
            } else {
                let hash = Self.nameHash(ggufName)
                for i in 0..<(rows * rowLength) {
                    out[i] = Self.value(seed: seed, nameHash: hash, index: UInt64(i), rowLength: rowLength)
                }
            }
            let t = WeightTensor(name: ggufName, type: .f32, rowLength: rowLength, rowCount: rows, data: storage.bytes,
                                 owner: storage)
            cache[ggufName] = t
            return t
        }
    }

    // MARK: Known shapes

    /// Shapes for `--dummy-weights --model <name>`.
    public static let knownShapes: [(name: String, hyperparameters: LlamaHyperparameters)] = [
        ("llama-3-8b", LlamaHyperparameters(
            blockCount: 32, embeddingLength: 4096, feedForwardLength: 14336, headCount: 32, headCountKV: 8, headDim: 128,
            contextLength: 8192, vocabSize: 128_256, ropeFreqBase: 500_000, rmsNormEpsilon: 1e-5, tiedEmbeddings: false)),
        ("yi-6b", LlamaHyperparameters(
            blockCount: 32, embeddingLength: 4096, feedForwardLength: 11008, headCount: 32, headCountKV: 4, headDim: 128,
            contextLength: 4096, vocabSize: 64000, ropeFreqBase: 5_000_000, rmsNormEpsilon: 1e-5, tiedEmbeddings: false)),
        ("smollm2-135m", LlamaHyperparameters(
            blockCount: 30, embeddingLength: 576, feedForwardLength: 1536, headCount: 9, headCountKV: 3, headDim: 64,
            contextLength: 8192, vocabSize: 49152, ropeFreqBase: 100_000, rmsNormEpsilon: 1e-5, tiedEmbeddings: true)),
    ]

    public static func knownShape(_ name: String) -> LlamaHyperparameters? {
        knownShapes.first { $0.name == name.lowercased() }?.hyperparameters
    }
}
