import CUDADriver
import CUDAKernels
import Kernels
import Model
import VAttention
#if canImport(Glibc)
import Glibc
#endif

/// A Llama-family model on one GPU: bf16 weights, cuBLAS GEMMs (fp32 accumulation), fp32 residual stream, fused
/// RMSNorm+residual and RoPE+KV-append kernels, the attention kernels of `CUDAKernels` reading K/V straight from the
/// KV store (vAttention: the virtual tensors' base + strides; paged: block tables), and sampling on the GPU — one
/// small copy of token ids back per step.
///
/// One step: upload the step's metadata (one copy) → embed → per layer [RMSNorm → QKV GEMM → RoPE+append →
/// attention → O GEMM → add+RMSNorm → gate|up GEMM → SiLU·mul → down GEMM → add+RMSNorm] → gather the rows that want
/// logits → LM-head GEMM → sample → copy the tokens back.
public final class CUDALlamaModel: ModelRunner, @unchecked Sendable {
    public let hyperparameters: LlamaHyperparameters
    public let deviceDescription: String
    public let device: CUDADevice
    public let stream: CUDAStream
    public let maxTokens: Int
    public let maxRows: Int
    /// Bytes of weights on the device.
    public private(set) var weightBytes = 0

    private let cuda: CUDA
    private let blas: CUBLAS
    private let kernels: LlamaKernels
    private let decodeKernels: DecodeAttentionKernels
    private let prefillKernels: PrefillAttentionKernels

    private struct Layer {
        var attentionNorm: DeviceBuffer, qkv: DeviceBuffer, o: DeviceBuffer
        var ffnNorm: DeviceBuffer, gateUp: DeviceBuffer, down: DeviceBuffer
    }
    private var layers: [Layer] = []
    private var embeddings: DeviceBuffer!
    private var output: DeviceBuffer?
    private var outputNorm: DeviceBuffer!
    private let inverseFrequencies: DeviceBuffer

    // Scratch, sized for `maxTokens` tokens and `maxRows` logits rows per step.
    private let x, h, qkv, q, attention, delta, gateUp, activation, lastHidden, logits, sampled: DeviceBuffer
    private var metadata: DeviceBuffer
    private var decodeWorkspaces: [DecodeWorkspaceKey: (DecodeShape, DecodeWorkspace)] = [:]

    private var qDim: Int { hyperparameters.headCount * hyperparameters.headDim }
    private var kvDim: Int { hyperparameters.headCountKV * hyperparameters.headDim }

    /// - maxTokens: tokens per step at most (the engine's token budget); maxRows: sequences per step at most.
    /// Weights from any source (GGUF, safetensors: dequantized to fp32 on the host, rounded to bf16, uploaded);
    /// `DummyWeights` are generated on the device with the same formula instead.
    public init(weights: any LlamaWeights, device: CUDADevice, maxTokens: Int, maxRows: Int, compiler: NVRTC) throws {
        let hp = weights.hyperparameters
        hyperparameters = hp
        self.device = device
        cuda = device.cuda
        try device.bindCallingThread()
        stream = try CUDAStream(cuda)
        deviceDescription = "cuda: " + ((try? device.name()) ?? "GPU")
        self.maxTokens = maxTokens
        self.maxRows = maxRows
        blas = try CUBLAS(cuda, stream: stream)
        kernels = try LlamaKernels(device: device, compiler: compiler)
        decodeKernels = try DecodeAttentionKernels(device: device, compiler: compiler)
        prefillKernels = try PrefillAttentionKernels(device: device, compiler: compiler)

        let d = hp.headDim, dModel = hp.embeddingLength, ffn = hp.feedForwardLength
        let qkvDim = (hp.headCount + 2 * hp.headCountKV) * d
        let n = maxTokens
        let context = device.cuda
        func buffer(_ bytes: Int) throws -> DeviceBuffer { try DeviceBuffer(context, byteCount: bytes) }
        x = try buffer(n * dModel * 4)
        h = try buffer(n * dModel * 2)
        qkv = try buffer(n * qkvDim * 2)
        q = try buffer(n * hp.headCount * d * 2)
        attention = try buffer(n * hp.headCount * d * 2)
        delta = try buffer(n * dModel * 4)
        gateUp = try buffer(n * 2 * ffn * 2)
        activation = try buffer(n * ffn * 2)
        lastHidden = try buffer(maxRows * dModel * 2)
        logits = try buffer(maxRows * hp.vocabSize * 4)
        sampled = try buffer(maxRows * 4)
        metadata = try buffer((3 * n + 8 * maxRows) * 4 + 64 * 1024)
        var inv = hp.ropeInverseFrequencies
        // llama.cpp's converter stores Llama 3.1's RoPE scaling as per-pair divisors (as the CPU model applies).
        if weights.hasTensor("rope_freqs.weight") {
            let factors = try weights.tensor("rope_freqs.weight").dequantizeRow(0)
            for i in inv.indices { inv[i] /= factors[i] }
        }
        inverseFrequencies = try buffer(inv.count * 4)
        try inverseFrequencies.upload(inv)

        if let dummy = weights as? DummyWeights {
            try generateDummy(seed: dummy.seed)
        } else {
            try upload(weights)
        }
        try stream.synchronize()
    }

    // MARK: Weights

    private func upload(_ weights: any LlamaWeights) throws {
        let hp = hyperparameters
        func tensors(_ names: [String]) throws -> DeviceBuffer {
            let ts = try names.map { try weights.tensor($0) }
            let cols = ts[0].rowLength
            precondition(ts.allSatisfy { $0.rowLength == cols }, "fused tensors differ in width: \(names)")
            let rows = ts.reduce(0) { $0 + $1.rowCount }
            let buffer = try DeviceBuffer(cuda, byteCount: rows * cols * 2)
            var host = [UInt16](repeating: 0, count: rows * cols)
            var r = 0
            for t in ts {
                for i in 0..<t.rowCount {
                    let row = t.dequantizeRow(i)
                    for j in 0..<cols { host[(r + i) * cols + j] = bf16Bits(row[j]) }
                }
                r += t.rowCount
            }
            try buffer.upload(host)
            weightBytes += buffer.byteCount
            return buffer
        }
        func vector(_ name: String) throws -> DeviceBuffer {
            let values = try weights.tensor(name).dequantizeRow(0)
            let buffer = try DeviceBuffer(cuda, byteCount: values.count * 4)
            try buffer.upload(values)
            weightBytes += buffer.byteCount
            return buffer
        }
        embeddings = try tensors(["token_embd.weight"])
        outputNorm = try vector("output_norm.weight")
        output = hp.tiedEmbeddings ? nil : try tensors(["output.weight"])
        layers = try (0..<hp.blockCount).map { i in
            let p = "blk.\(i)."
            return Layer(attentionNorm: try vector(p + "attn_norm.weight"),
                         qkv: try tensors([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"]),
                         o: try tensors([p + "attn_output.weight"]),
                         ffnNorm: try vector(p + "ffn_norm.weight"),
                         gateUp: try tensors([p + "ffn_gate.weight", p + "ffn_up.weight"]),
                         down: try tensors([p + "ffn_down.weight"]))
        }
    }

    /// The same values as `DummyWeights` on the CPU (each fused part generated under its own GGUF name), as bf16.
    private func generateDummy(seed: UInt64) throws {
        let hp = hyperparameters
        let dModel = hp.embeddingLength, ffn = hp.feedForwardLength
        func tensors(_ parts: [(name: String, rows: Int)], cols: Int) throws -> DeviceBuffer {
            let rows = parts.reduce(0) { $0 + $1.rows }
            let buffer = try DeviceBuffer(cuda, byteCount: rows * cols * 2)
            var offset = 0
            for part in parts {
                try kernels.fillDummy(buffer.address + UInt64(offset * cols * 2), count: part.rows * cols, seed: seed,
                                      nameHash: DummyWeights.nameHash(part.name), scale: 1 / Float(cols).squareRoot(),
                                      stream: stream)
                offset += part.rows
            }
            weightBytes += buffer.byteCount
            return buffer
        }
        func ones(_ count: Int) throws -> DeviceBuffer {
            let buffer = try DeviceBuffer(cuda, byteCount: count * 4)
            try buffer.upload([Float](repeating: 1, count: count))
            weightBytes += buffer.byteCount
            return buffer
        }
        embeddings = try tensors([("token_embd.weight", hp.vocabSize)], cols: dModel)
        outputNorm = try ones(dModel)
        output = hp.tiedEmbeddings ? nil : try tensors([("output.weight", hp.vocabSize)], cols: dModel)
        layers = try (0..<hp.blockCount).map { i in
            let p = "blk.\(i)."
            return Layer(attentionNorm: try ones(dModel),
                         qkv: try tensors([(p + "attn_q.weight", qDim), (p + "attn_k.weight", kvDim),
                                           (p + "attn_v.weight", kvDim)], cols: dModel),
                         o: try tensors([(p + "attn_output.weight", dModel)], cols: qDim),
                         ffnNorm: try ones(dModel),
                         gateUp: try tensors([(p + "ffn_gate.weight", ffn), (p + "ffn_up.weight", ffn)], cols: dModel),
                         down: try tensors([(p + "ffn_down.weight", dModel)], cols: ffn))
        }
    }

    // MARK: Forward

    /// Capture decode-only steps in CUDA graphs (one per batch bucket, length bucket and KV store), replayed with
    /// new metadata each step: ~300 launches become one. Padded lanes have length 0 and write nothing.
    public var useGraphs = false
    /// Time each phase of a step with events (plain launches only: turns graphs off), summed over steps in
    /// `profile` (milliseconds by phase) — where a step's time goes.
    public var profiling = false { didSet { if profiling { useGraphs = false } } }
    public private(set) var profile: [String: Double] = [:]
    public private(set) var profiledSteps = 0
    private var profileEvents: [CUDAEvent] = []
    private var marks: [(phase: String, event: CUDAEvent)] = []

    /// Records the end of `phase` (the time since the previous mark is charged to it).
    private func mark(_ phase: String) throws {
        guard profiling else { return }
        if marks.count == profileEvents.count { profileEvents.append(try CUDAEvent(cuda, timing: true)) }
        let e = profileEvents[marks.count]
        try e.record(on: stream)
        marks.append((phase, e))
    }

    public func resetProfile() {
        profile = [:]
        profiledSteps = 0
    }

    private func collectProfile() throws {
        guard profiling, marks.count > 1 else { return }
        for i in 1..<marks.count {
            profile[marks[i].phase, default: 0] += Double(try marks[i].event.milliseconds(since: marks[i - 1].event))
        }
        profiledSteps += 1
        marks.removeAll()
    }

    /// Graph replays and captures so far.
    public private(set) var graphReplays = 0, graphCaptures = 0

    public func bindCallingThread() throws { try device.bindCallingThread() }

    public func run(_ chunks: [SequenceChunk], kv: any KVStore, sampling: [TokenDraw]) throws -> [TokenID] {
        try bindCallingThread()
        let plan = try prepare(chunks, kv: kv, draws: sampling)
        guard plan.tokens > 0 else { return [] }
        try execute(plan, kv: kv)
        try stream.synchronize()
        try collectProfile()
        guard plan.logitRows > 0 else { return [] }
        return try sampled.download(Int32.self, count: plan.realRows).map { TokenID($0) }
    }

    /// The logits of the last token of every chunk that wants them (for checks against a reference).
    public func logits(_ chunks: [SequenceChunk], kv: any KVStore) throws -> [[Float]] {
        try bindCallingThread()
        let want = chunks.filter(\.wantsLogits).count
        let plan = try prepare(chunks, kv: kv,
                               draws: Array(repeating: TokenDraw(parameters: .greedy, uniform: 0), count: want))
        try execute(plan, kv: kv)
        try stream.synchronize()
        try collectProfile()
        let v = hyperparameters.vocabSize
        let all = try logits.download(Float.self, count: plan.realRows * v)
        return (0..<plan.realRows).map { Array(all[($0 * v)..<(($0 + 1) * v)]) }
    }

    /// One step's layout on the device: where each array of the uploaded metadata lives, and the launch shapes.
    private struct StepPlan {
        var tokens = 0
        /// Chunk indices in row order: decodes first (one contiguous query block), then prompt chunks.
        var order: [Int] = []
        var rowOfChunk: [Int] = []
        var decodes = 0
        var logitRows = 0
        /// Rows the caller asked for (the rest are graph padding).
        var realRows = 0
        var tokensAt: UInt64 = 0, positionsAt: UInt64 = 0, ownersAt: UInt64 = 0
        var decodeSlotsAt: UInt64 = 0, decodeLengthsAt: UInt64 = 0, wantedAt: UInt64 = 0, paramsAt: UInt64 = 0
        var tablesAt: UInt64 = 0
        var decode: (DecodeShape, DecodeWorkspace)?
        var chunks: [SequenceChunk] = []
        /// Set for decode-only steps when graphs are on.
        var graphKey: GraphKey?
    }

    private struct GraphKey: Hashable {
        var store: ObjectIdentifier
        var batch: Int
        var length: Int
    }
    private var graphs: [GraphKey: CUDAGraphExec] = [:]

    private func isDecode(_ c: SequenceChunk) -> Bool { c.tokens.count == 1 && c.start > 0 }

    /// Builds and uploads the step's metadata (one copy): tokens, positions, slot (vAttention) or sequence (paged)
    /// per token, decode slots and lengths, rows wanting logits, sampling parameters, block tables (paged).
    private func prepare(_ chunks: [SequenceChunk], kv: any KVStore, draws: [TokenDraw]) throws -> StepPlan {
        var plan = StepPlan()
        plan.chunks = chunks
        plan.order = chunks.indices.filter { isDecode(chunks[$0]) } + chunks.indices.filter { !isDecode(chunks[$0]) }
        plan.decodes = chunks.filter(isDecode).count
        plan.tokens = chunks.reduce(0) { $0 + $1.tokens.count }
        guard plan.tokens > 0 else { return plan }
        let paged = kv as? PagedKVStore
        precondition(paged?.isOnDevice ?? (kv is VAttentionKVStore), "the CUDA model needs a device KV store")
        let decodeOnly = plan.decodes == chunks.count && chunks.allSatisfy(\.wantsLogits)
        // Decode-only steps run at the next bucket size with empty lanes, graphs or not, so a graph replay computes
        // exactly what plain launches compute (same GEMM shapes, same rounding).
        let lanes = decodeOnly ? min(plan.decodes.nextPowerOfTwo, maxRows) : plan.decodes
        precondition(plan.tokens <= maxTokens && lanes <= maxTokens,
                     "\(plan.tokens) tokens in a step; the model was built for \(maxTokens)")

        var tokens: [Int32] = [], positions: [Int32] = [], owners: [Int32] = []
        plan.rowOfChunk = [Int](repeating: 0, count: chunks.count)
        for (sequence, ci) in plan.order.enumerated() {
            let c = chunks[ci]
            plan.rowOfChunk[ci] = tokens.count
            for (j, t) in c.tokens.enumerated() {
                tokens.append(t)
                positions.append(Int32(c.start + j))
                owners.append(Int32(paged != nil ? sequence : c.slot))
            }
        }
        var wanted: [Int32] = [], params: [Int32] = []
        var draw = draws.makeIterator()
        for (i, c) in chunks.enumerated() where c.wantsLogits {  // logits rows in the caller's chunk order
            wanted.append(Int32(plan.rowOfChunk[i] + c.tokens.count - 1))
            params += draw.next()!.kernelArguments
        }
        plan.realRows = wanted.count
        var decodeSlots = plan.order.prefix(plan.decodes).map { Int32(chunks[$0].slot) }
        var decodeLengths = plan.order.prefix(plan.decodes).map { Int32(chunks[$0].start + 1) }
        // Empty lanes: position −1 (RoPE/append skip the token), length 0 (attention writes zeros).
        for lane in plan.decodes..<max(lanes, plan.decodes) {
            tokens.append(0); positions.append(-1); owners.append(Int32(paged != nil ? lane : 0))
            decodeSlots.append(0); decodeLengths.append(0)
            wanted.append(Int32(lane)); params += TokenDraw(parameters: .greedy, uniform: 0).kernelArguments
        }
        if lanes > plan.decodes { plan.tokens = lanes; plan.decodes = lanes }
        plan.logitRows = wanted.count
        precondition(plan.logitRows <= maxRows, "\(plan.logitRows) logits rows; built for \(maxRows)")
        var tables: [Int32] = []
        if let paged {
            for sequence in 0..<max(plan.order.count, lanes) {
                var row = sequence < plan.order.count ? paged.blockTable(slot: chunks[plan.order[sequence]].slot) : []
                row += [Int32](repeating: 0, count: paged.tableStride - row.count)
                tables += row
            }
        }
        var meta: [Int32] = []
        func put(_ a: [Int32]) -> UInt64 {
            let address = metadata.address + UInt64(meta.count * 4)
            meta += a
            return address
        }
        plan.tokensAt = put(tokens); plan.positionsAt = put(positions); plan.ownersAt = put(owners)
        plan.decodeSlotsAt = put(decodeSlots); plan.decodeLengthsAt = put(decodeLengths)
        plan.wantedAt = put(wanted); plan.paramsAt = put(params); plan.tablesAt = put(tables)
        if meta.count * 4 > metadata.byteCount {  // long block tables: grow (between steps; drops stale graphs)
            metadata = try DeviceBuffer(cuda, byteCount: meta.count * 8)
            graphs.removeAll()
            return try prepare(chunks, kv: kv, draws: draws)
        }
        try metadata.upload(meta)
        if plan.decodes > 0 {
            plan.decode = try decodeWorkspace(batch: plan.decodes, maxLength: Int(decodeLengths.max()!),
                                              maxContext: kv.maxContext)
        }
        if useGraphs && decodeOnly {
            plan.graphKey = GraphKey(store: ObjectIdentifier(kv), batch: lanes, length: plan.decode!.0.maxLength)
        }
        return plan
    }

    /// Queues the step: replays (or captures, then replays) its graph, or launches everything directly.
    private func execute(_ plan: StepPlan, kv: any KVStore) throws {
        guard let key = plan.graphKey else { return try enqueue(plan, kv: kv) }
        if graphs[key] == nil {
            graphs[key] = try stream.capture { try enqueue(plan, kv: kv) }
            graphCaptures += 1
        }
        try graphs[key]!.launch(on: stream)
        graphReplays += 1
    }

    /// Queues the forward pass and the sampler on the stream (capturable: no allocation, no synchronization).
    private func enqueue(_ plan: StepPlan, kv: any KVStore) throws {
        let hp = hyperparameters
        let d = hp.headDim, dModel = hp.embeddingLength, ffn = hp.feedForwardLength
        let qkvDim = qDim + 2 * kvDim
        let n = plan.tokens
        let chunks = plan.chunks
        let paged = kv as? PagedKVStore
        let vattention = kv as? VAttentionKVStore
        let scale = 1 / Float(d).squareRoot()

        try mark("start")
        try kernels.embed(table: embeddings.address, tokens: plan.tokensAt, n: n, width: dModel, into: x.address,
                          stream: stream)
        try kernels.addRMSNorm(x: x.address, delta: 0, weight: layers[0].attentionNorm.address, into: h.address,
                               rows: n, width: dModel, epsilon: hp.rmsNormEpsilon, stream: stream)
        try mark("embed + RMSNorm")
        for (l, layer) in layers.enumerated() {
            try blas.linear(input: h.address, .bf16, weight: layer.qkv.address, .bf16, output: qkv.address, .bf16,
                            tokens: n, inFeatures: dModel, outFeatures: qkvDim)
            try mark("QKV GEMM")
            if let vattention {
                let kView = vattention.manager.view(layer: l, .key), vView = vattention.manager.view(layer: l, .value)
                let strided = DeviceStridedKV(keys: UInt64(kView.address), values: UInt64(vView.address),
                                              slotStride: kView.slotStride, tokenStride: kView.tokenStride,
                                              headStride: kView.headStride)
                try kernels.ropeAppend(qkv: qkv.address, n: n, qHeads: hp.headCount, kvHeads: hp.headCountKV,
                                       headDim: d, positions: plan.positionsAt, slots: plan.ownersAt,
                                       inverseFrequencies: inverseFrequencies.address, q: q.address, kv: strided,
                                       stream: stream)
                try mark("RoPE + KV append")
                if let (shape, workspace) = plan.decode {
                    try decodeKernels.decode(query: q.address, kv: strided, slots: plan.decodeSlotsAt,
                                             lengths: plan.decodeLengthsAt, output: attention.address, shape: shape,
                                             workspace: workspace, scale: scale, stream: stream)
                }
                for ci in plan.order.dropFirst(plan.decodes) {
                    let c = chunks[ci], row = UInt64(plan.rowOfChunk[ci])
                    let kBase = kView.byteAddress(slot: c.slot, token: 0), vBase = vView.byteAddress(slot: c.slot, token: 0)
                    try prefillKernels.launch(
                        query: q.address + row * UInt64(qDim * 2), output: attention.address + row * UInt64(qDim * 2),
                        kv: .contiguous(keys: UInt64(kBase), values: UInt64(vBase), tokenStride: kView.tokenStride,
                                        headStride: kView.headStride),
                        chunkLength: c.tokens.count, offset: c.start, qHeads: hp.headCount, kvHeads: hp.headCountKV,
                        headDim: d, dtype: .bf16, scale: scale, stream: stream)
                }
            } else if let paged {
                let pools = paged.devicePools(layer: l)
                let table = DevicePagedKV(keyPool: pools.keys, valuePool: pools.values, blockTables: plan.tablesAt,
                                          tableStride: paged.tableStride, blockSize: paged.blockSize,
                                          kvHeads: hp.headCountKV, headDim: d)
                try kernels.ropeAppend(qkv: qkv.address, n: n, qHeads: hp.headCount, kvHeads: hp.headCountKV,
                                       headDim: d, positions: plan.positionsAt, sequences: plan.ownersAt,
                                       inverseFrequencies: inverseFrequencies.address, q: q.address, kv: table,
                                       stream: stream)
                try mark("RoPE + KV append")
                if let (shape, workspace) = plan.decode {
                    try decodeKernels.decode(query: q.address, kv: table, lengths: plan.decodeLengthsAt,
                                             output: attention.address, shape: shape, workspace: workspace,
                                             scale: scale, stream: stream)
                }
                for (sequence, ci) in plan.order.enumerated().dropFirst(plan.decodes) {
                    let c = chunks[ci], row = UInt64(plan.rowOfChunk[ci])
                    try prefillKernels.launch(
                        query: q.address + row * UInt64(qDim * 2), output: attention.address + row * UInt64(qDim * 2),
                        kv: .paged(keys: pools.keys, values: pools.values,
                                   table: plan.tablesAt + UInt64(sequence * paged.tableStride * 4),
                                   blockSize: paged.blockSize),
                        chunkLength: c.tokens.count, offset: c.start, qHeads: hp.headCount, kvHeads: hp.headCountKV,
                        headDim: d, dtype: .bf16, scale: scale, stream: stream)
                }
            }
            try mark("attention")
            try blas.linear(input: attention.address, .bf16, weight: layer.o.address, .bf16, output: delta.address,
                            .fp32, tokens: n, inFeatures: qDim, outFeatures: dModel)
            try mark("O GEMM")
            try kernels.addRMSNorm(x: x.address, delta: delta.address, weight: layer.ffnNorm.address, into: h.address,
                                   rows: n, width: dModel, epsilon: hp.rmsNormEpsilon, stream: stream)
            try mark("add + RMSNorm")
            try blas.linear(input: h.address, .bf16, weight: layer.gateUp.address, .bf16, output: gateUp.address,
                            .bf16, tokens: n, inFeatures: dModel, outFeatures: 2 * ffn)
            try mark("gate|up GEMM")
            try kernels.siluMul(gateUp: gateUp.address, into: activation.address, rows: n, width: ffn, stream: stream)
            try mark("SiLU·mul")
            try blas.linear(input: activation.address, .bf16, weight: layer.down.address, .bf16,
                            output: delta.address, .fp32, tokens: n, inFeatures: ffn, outFeatures: dModel)
            try mark("down GEMM")
            let nextNorm = l + 1 < layers.count ? layers[l + 1].attentionNorm : outputNorm!
            try kernels.addRMSNorm(x: x.address, delta: delta.address, weight: nextNorm.address, into: h.address,
                                   rows: n, width: dModel, epsilon: hp.rmsNormEpsilon, stream: stream)
            try mark("add + RMSNorm")
        }
        let rows = plan.logitRows
        guard rows > 0 else { return }
        try kernels.gatherRows(h.address, rows: plan.wantedAt, count: rows, width: dModel, into: lastHidden.address,
                               stream: stream)
        try blas.linear(input: lastHidden.address, .bf16, weight: (output ?? embeddings).address, .bf16,
                        output: logits.address, .fp32, tokens: rows, inFeatures: dModel, outFeatures: hp.vocabSize)
        try mark("LM head")
        try kernels.sample(logits: logits.address, rows: rows, vocab: hp.vocabSize, rowStride: hp.vocabSize,
                           params: plan.paramsAt, into: sampled.address, stream: stream)
        try mark("sampling")
    }

    private struct DecodeWorkspaceKey: Hashable { var batch: Int, length: Int }

    /// Decode launches are bucketed (batch and length to powers of two) so split sizes and scratch are reused.
    private func decodeWorkspace(batch: Int, maxLength: Int, maxContext: Int) throws -> (DecodeShape, DecodeWorkspace) {
        let hp = hyperparameters
        // The grid never needs to cover more than the store holds (a paged table is exactly that wide).
        let length = min(max(256, maxLength.nextPowerOfTwo), max(maxLength, maxContext))
        let key = DecodeWorkspaceKey(batch: max(1, batch).nextPowerOfTwo, length: length)
        let (bucketShape, workspace): (DecodeShape, DecodeWorkspace)
        if let hit = decodeWorkspaces[key] {
            (bucketShape, workspace) = hit
        } else {
            let s = DecodeShape(batch: key.batch, qHeads: hp.headCount, kvHeads: hp.headCountKV, headDim: hp.headDim,
                                dtype: .bf16, maxLength: key.length, limits: decodeKernels.limits)
            let w = try DecodeWorkspace(cuda, shape: s)
            decodeWorkspaces[key] = (s, w)
            (bucketShape, workspace) = (s, w)
        }
        let shape = DecodeShape(batch: batch, qHeads: hp.headCount, kvHeads: hp.headCountKV, headDim: hp.headDim,
                                dtype: .bf16, maxLength: key.length, chunk: bucketShape.chunk,
                                limits: decodeKernels.limits)
        return (shape, workspace)
    }
}

extension Int {
    var nextPowerOfTwo: Int { self <= 1 ? 1 : 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount) }
}
