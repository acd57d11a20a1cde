import Kernels
import Model
import VAttention

/// One sequence's tokens in a forward pass: `tokens` sit at positions `start ..< start + tokens.count` of `slot`.
public struct SequenceChunk: Sendable, Equatable {
    public var slot: Int
    public var start: Int
    public var tokens: [TokenID]
    /// Whether the caller needs logits of the chunk's last token (a finished prefill or a decode).
    public var wantsLogits: Bool

    public init(slot: Int, start: Int, tokens: [TokenID], wantsLogits: Bool) {
        self.slot = slot
        self.start = start
        self.tokens = tokens
        self.wantsLogits = wantsLogits
    }
}

/// A Llama-family model on the CPU, computing straight from the stored (possibly quantized) weights of any
/// `LlamaWeights` source: embeddings, RMSNorm, RoPE, GQA attention through `KVStore` (vAttention or paged), SwiGLU
/// MLP, tied or separate output head.
public final class CPULlamaModel: @unchecked Sendable {
    public let hyperparameters: LlamaHyperparameters
    /// Kept so the weights outlive the model whatever their source (tensors also retain their own storage).
    public let weights: any LlamaWeights
    /// How the projections multiply: the `matmul` asked for at load, or `.float32` when no weight is in a format the
    /// integer kernels take.
    public let matmulInUse: CPUMatmul
    private let embeddings: WeightTensor
    private let outputNorm: [Float]
    private let output: Linear
    private let layers: [Layer]
    /// θ_i for the rotary embedding (hyperparameters' frequencies, divided by `rope_freqs.weight` if present).
    private let inverseFrequencies: [Float]
    /// RMSNorm, RoPE and SiLU·mul: the matmul's instruction set, or the best one for the float32 matmul.
    private let floatKernels: FloatKernels

    struct Layer {
        var attentionNorm: [Float], q: Linear, k: Linear, v: Linear, o: Linear
        var ffnNorm: [Float], gate: Linear, up: Linear, down: Linear
    }

    /// Loads every tensor the forward pass needs and checks its shape against the hyperparameters, so a bad file is
    /// an error here rather than a crash mid-forward. `matmul` must be `.float32` or an instruction set this CPU
    /// supports.
    public init(weights: any LlamaWeights, matmul: CPUMatmul = .best) throws {
        if case .integer(let isa, _) = matmul { precondition(isa.isSupported, "this CPU cannot run \(isa) kernels") }
        let hp = weights.hyperparameters
        hyperparameters = hp
        self.weights = weights
        let dModel = hp.embeddingLength, dHead = hp.headDim
        let qDim = hp.headCount * dHead, kvDim = hp.headCountKV * dHead, ffn = hp.feedForwardLength
        func tensor(_ name: String, rows: Int, rowLength: Int) throws -> WeightTensor {
            let t = try weights.tensor(name)
            guard t.rowCount == rows, t.rowLength == rowLength else {
                throw WeightsError.shapeMismatch(name, expected: (rows, rowLength), found: t)
            }
            return t
        }
        func linear(_ name: String, rows: Int, rowLength: Int) throws -> Linear {
            Linear(try tensor(name, rows: rows, rowLength: rowLength), matmul)
        }
        func norm(_ name: String) throws -> [Float] { try tensor(name, rows: 1, rowLength: dModel).dequantizeRow(0) }
        embeddings = try tensor("token_embd.weight", rows: hp.vocabSize, rowLength: dModel)
        outputNorm = try norm("output_norm.weight")
        output = Linear(hp.tiedEmbeddings ? embeddings : try tensor("output.weight", rows: hp.vocabSize, rowLength: dModel),
                        matmul)
        // A loop, not `(0..<n).map`: map reserves n layers up front, and a lying block count must fail at the first
        // missing tensor, not allocate (GGUFWeights checks the count too; other weight sources may not).
        var layers: [Layer] = []
        for i in 0..<hp.blockCount {
            let p = "blk.\(i)."
            layers.append(Layer(attentionNorm: try norm(p + "attn_norm.weight"),
                                q: try linear(p + "attn_q.weight", rows: qDim, rowLength: dModel),
                                k: try linear(p + "attn_k.weight", rows: kvDim, rowLength: dModel),
                                v: try linear(p + "attn_v.weight", rows: kvDim, rowLength: dModel),
                                o: try linear(p + "attn_output.weight", rows: dModel, rowLength: qDim),
                                ffnNorm: try norm(p + "ffn_norm.weight"),
                                gate: try linear(p + "ffn_gate.weight", rows: ffn, rowLength: dModel),
                                up: try linear(p + "ffn_up.weight", rows: ffn, rowLength: dModel),
                                down: try linear(p + "ffn_down.weight", rows: dModel, rowLength: ffn)))
        }
        self.layers = layers
        let integer = layers.contains { [$0.q, $0.k, $0.v, $0.o, $0.gate, $0.up, $0.down].contains { $0.kernel != nil } }
            || output.kernel != nil
        matmulInUse = integer ? matmul : .float32
        var frequencies = hp.ropeInverseFrequencies
        // llama.cpp's converter stores Llama 3.1's RoPE scaling as per-pair divisors.
        if weights.hasTensor("rope_freqs.weight") {
            let factors = try tensor("rope_freqs.weight", rows: 1, rowLength: dHead / 2).dequantizeRow(0)
            for i in frequencies.indices { frequencies[i] /= factors[i] }
        }
        inverseFrequencies = frequencies
        if case .integer(let isa, _) = matmulInUse {
            floatKernels = FloatKernels(isa)
        } else {
            floatKernels = FloatKernels()
        }
    }

    /// A model straight from a parsed GGUF file.
    public convenience init(file: GGUFFile, matmul: CPUMatmul = .best) throws {
        try self.init(weights: GGUFWeights(file: file), matmul: matmul)
    }

    public var attentionShape: AttentionShape {
        AttentionShape(qHeads: hyperparameters.headCount, kvHeads: hyperparameters.headCountKV,
                       headDim: hyperparameters.headDim)
    }

    /// Runs the chunks through the model, writing their K/V into `kv` (whose `step` must already back every slot to
    /// `start + tokens.count`), and returns the logits of the last token of each chunk that wants them, in order.
    public func forward(_ chunks: [SequenceChunk], kv: any KVStore) -> [[Float]] {
        precondition(kv.location == .host, "the CPU model reads K/V from host memory; this store is on the device")
        let hp = hyperparameters
        let dModel = hp.embeddingLength, dHead = hp.headDim
        let qDim = hp.headCount * dHead, kvDim = hp.headCountKV * dHead, ffn = hp.feedForwardLength
        let n = chunks.reduce(0) { $0 + $1.tokens.count }
        guard n > 0 else { return [] }
        var slots: [Int] = [], positions: [Int] = []
        for c in chunks {
            for i in c.tokens.indices { slots.append(c.slot); positions.append(c.start + i) }
        }

        let x = Buffer(n * dModel), h = Buffer(n * dModel)
        let q = Buffer(n * qDim), k = Buffer(n * kvDim), v = Buffer(n * kvDim), attn = Buffer(n * qDim)
        let gate = Buffer(n * ffn), up = Buffer(n * ffn)
        let quantized = QuantizedRows(capacity: n * max(dModel, qDim, ffn))
        // Each row's rotation table, once for all layers.
        let ropeTables = Buffer(n * 2 * dHead)
        defer {
            [x, h, q, k, v, attn, gate, up, ropeTables].forEach { $0.free() }
            quantized.free()
        }
        for r in 0..<n {
            ropeTable(position: positions[r], inverseFrequencies: inverseFrequencies, into: ropeTables.p + r * 2 * dHead)
        }
        let ops = floatKernels

        var t = 0
        for c in chunks {
            for token in c.tokens {
                Quant.dequantize(embeddings.type, embeddings.rowData(Int(token)), into: x.p + t * dModel, count: dModel)
                t += 1
            }
        }
        let shape = attentionShape
        let scale = 1 / Float(dHead).squareRoot()
        // Decode chunks (one token) go to the batched decode kernel together; prefill chunks one by one.
        var decodeRows: [Int] = [], decodeSlots: [Int] = [], decodeLengths: [Int] = []
        var prefill: [(row: Int, chunk: SequenceChunk)] = []
        var row = 0
        for c in chunks {
            if c.tokens.count == 1 {
                decodeRows.append(row); decodeSlots.append(c.slot); decodeLengths.append(c.start + 1)
            } else {
                prefill.append((row, c))
            }
            row += c.tokens.count
        }
        let decodeQuery = Buffer(decodeRows.count * qDim), decodeOut = Buffer(decodeRows.count * qDim)
        defer { decodeQuery.free(); decodeOut.free() }

        for (layerIndex, layer) in layers.enumerated() {
            let cache = LayerKV(kv.binding(layer: layerIndex))
            eachRows(n) { r, rows in
                layer.attentionNorm.withUnsafeBufferPointer {
                    ops.rmsNorm(x.p + r * dModel, rows: rows, width: dModel, weight: $0.baseAddress!,
                                epsilon: hp.rmsNormEpsilon, into: h.p + r * dModel)
                }
            }
            multiply([(layer.q, q.p), (layer.k, k.p), (layer.v, v.p)], h.p, tokens: n, quantized: quantized)
            // llama.cpp's "normal" RoPE (adjacent pairs), matching the GGUF's permuted Q/K weights.
            eachRows(n) { first, rows in
                for r in first..<(first + rows) {
                    let table = ropeTables.p + r * 2 * dHead
                    ops.rope(q.p + r * qDim, heads: hp.headCount, headDim: dHead, cosSin: table)
                    ops.rope(k.p + r * kvDim, heads: hp.headCountKV, headDim: dHead, cosSin: table)
                }
            }
            cache.append(keys: k.p, values: v.p, slots: slots, positions: positions, kvHeads: hp.headCountKV,
                         headDim: dHead)
            if !decodeRows.isEmpty {
                for (i, r) in decodeRows.enumerated() { (decodeQuery.p + i * qDim).update(from: q.p + r * qDim, count: qDim) }
                cache.decode(query: decodeQuery.p, slots: decodeSlots, lengths: decodeLengths, shape: shape,
                             scale: scale, output: decodeOut.p)
                for (i, r) in decodeRows.enumerated() { (attn.p + r * qDim).update(from: decodeOut.p + i * qDim, count: qDim) }
            }
            for (r, c) in prefill {
                cache.prefill(query: q.p + r * qDim, chunkLength: c.tokens.count, offset: c.start, slot: c.slot,
                              shape: shape, scale: scale, output: attn.p + r * qDim)
            }
            multiply(layer.o, attn.p, tokens: n, h.p, quantized: quantized)
            add(h.p, into: x.p, count: n * dModel)
            eachRows(n) { r, rows in
                layer.ffnNorm.withUnsafeBufferPointer {
                    ops.rmsNorm(x.p + r * dModel, rows: rows, width: dModel, weight: $0.baseAddress!,
                                epsilon: hp.rmsNormEpsilon, into: h.p + r * dModel)
                }
            }
            multiply([(layer.gate, gate.p), (layer.up, up.p)], h.p, tokens: n, quantized: quantized)
            eachRows(n) { r, rows in ops.siluMul(gate.p + r * ffn, up.p + r * ffn, count: rows * ffn) }
            multiply(layer.down, gate.p, tokens: n, h.p, quantized: quantized)
            add(h.p, into: x.p, count: n * dModel)
        }

        // Logits only for the rows asked for.
        var wanted: [Int] = []
        row = 0
        for c in chunks {
            row += c.tokens.count
            if c.wantsLogits { wanted.append(row - 1) }
        }
        guard !wanted.isEmpty else { return [] }
        let last = Buffer(wanted.count * dModel)
        defer { last.free() }
        outputNorm.withUnsafeBufferPointer { weight in
            for (i, r) in wanted.enumerated() {
                ops.rmsNorm(x.p + r * dModel, rows: 1, width: dModel, weight: weight.baseAddress!,
                            epsilon: hp.rmsNormEpsilon, into: last.p + i * dModel)
            }
        }
        let vocab = output.weight.rowCount
        var logits = [Float](repeating: 0, count: wanted.count * vocab)
        logits.withUnsafeMutableBufferPointer {
            multiply(output, last.p, tokens: wanted.count, $0.baseAddress!, quantized: quantized)
        }
        return (0..<wanted.count).map { Array(logits[($0 * vocab)..<(($0 + 1) * vocab)]) }
    }
}

/// One layer's K/V as the CPU kernels address it: strided tensors (vAttention) or block pools and tables (paged).
private enum LayerKV {
    case strided(keys: KVTensorView, values: KVTensorView)
    case paged(PagedKVBinding)

    init(_ binding: KVLayerBinding) {
        switch binding {
        case .strided(let k, let v):
            self = .strided(keys: k, values: v)
        case .paged(let p):
            self = .paged(p)
        }
    }

    /// The pools of a paged layer as the kernels take them, with the block tables of `slots` (sequence i = slots[i]).
    private static func pools(_ p: PagedKVBinding, slots: [Int]) -> (keys: PagedKV, values: PagedKV) {
        let tables = slots.map(p.blockTable(slot:))
        func pool(_ address: UInt) -> PagedKV {
            PagedKV(pool: UnsafeMutableRawPointer(bitPattern: address)!, elementType: p.elementType,
                    numBlocks: p.blockCount, blockSize: p.blockSize, kvHeads: p.kvHeads, headDim: p.headDim,
                    blockTables: tables)
        }
        return (pool(p.keys), pool(p.values))
    }

    func append(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, slots: [Int], positions: [Int],
                kvHeads: Int, headDim: Int) {
        switch self {
        case .strided(let k, let v):
            appendKV(keys: keys, values: values, slots: slots, positions: positions, kvHeads: kvHeads,
                     headDim: headDim, into: k, v)
        case .paged(let p):
            let distinct = Array(Set(slots)).sorted()
            let index = Dictionary(uniqueKeysWithValues: distinct.enumerated().map { ($1, $0) })
            let (k, v) = Self.pools(p, slots: distinct)
            appendKVPaged(keys: keys, values: values, sequences: slots.map { index[$0]! }, positions: positions,
                          into: k, v)
        }
    }

    func decode(query: UnsafePointer<Float>, slots: [Int], lengths: [Int], shape: AttentionShape, scale: Float,
                output: UnsafeMutablePointer<Float>) {
        switch self {
        case .strided(let k, let v):
            decodeAttention(query: query, keys: k, values: v, slots: slots, lengths: lengths, shape: shape,
                            scale: scale, output: output)
        case .paged(let p):
            let (k, v) = Self.pools(p, slots: slots)
            decodeAttention(query: query, keys: k, values: v, lengths: lengths, shape: shape, scale: scale,
                            output: output)
        }
    }

    func prefill(query: UnsafePointer<Float>, chunkLength: Int, offset: Int, slot: Int, shape: AttentionShape,
                 scale: Float, output: UnsafeMutablePointer<Float>) {
        switch self {
        case .strided(let k, let v):
            prefillAttention(query: query, chunkLength: chunkLength, offset: offset, keys: k, values: v, slot: slot,
                             shape: shape, scale: scale, output: output)
        case .paged(let p):
            let (k, v) = Self.pools(p, slots: [slot])
            prefillAttention(query: query, chunkLength: chunkLength, offset: offset, keys: k, values: v, sequence: 0,
                             shape: shape, scale: scale, output: output)
        }
    }
}

/// Runs `body(first, count)` over rows 0..<n: in items of 8 rows on every thread when there are enough rows to pay
/// for it (a prefill chunk or a large batch), else in one call. Rows are independent, so the results are the same
/// either way.
private func eachRows(_ n: Int, _ body: @Sendable (_ first: Int, _ count: Int) -> Void) {
    if n >= 16 {
        parallelFor((n + 7) / 8) { item in body(item * 8, min(8, n - item * 8)) }
    } else {
        body(0, n)
    }
}

private func add(_ a: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { x[i] += a[i] }
}

/// A float scratch buffer with manual lifetime (freed by the forward pass that made it); parallel row bodies write
/// disjoint rows of it.
struct Buffer: @unchecked Sendable {
    let p: UnsafeMutablePointer<Float>
    init(_ count: Int) {
        p = .allocate(capacity: max(count, 1))
        p.initialize(repeating: .nan, count: max(count, 1))  // poisoned: a missed write shows up as NaN
    }
    func free() { p.deallocate() }
}
