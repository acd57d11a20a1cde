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
/// small copy of token ids back per step. Its parts: `CUDALlamaWeights` (upload or dummy generation),
/// `StepMetadata` (the step packed for one upload; CPU-tested), `CUDAGraphCache`, `CUDAStepProfiler`; this type owns
/// the scratch buffers and queues the forward pass.
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
    public var kvLocation: MemoryLocation { .device }
    /// Bytes of weights on the device.
    public var weightBytes: Int { weights.byteCount }

    private let cuda: CUDA
    private let blas: CUBLAS
    private let kernels: LlamaKernels
    private let decodeKernels: DecodeAttentionKernels
    private let prefillKernels: PrefillAttentionKernels
    private let weights: CUDALlamaWeights

    // Scratch, sized for `maxTokens` tokens and `maxRows` logits rows per step.
    private let x, h, qkv, q, attention, delta, gateUp, activation, lastHidden, logits, sampled: DeviceBuffer
    /// The step's `StepMetadata.words` (grown between steps when block tables outgrow it).
    private var metadata: DeviceBuffer
    private var decodeWorkspaces: [DecodeWorkspaceKey: (DecodeShape, DecodeWorkspace)] = [:]
    private let graphs = CUDAGraphCache()
    private let profiler: CUDAStepProfiler

    private var qDim: Int { hyperparameters.headCount * hyperparameters.headDim }
    private var kvDim: Int { hyperparameters.headCountKV * hyperparameters.headDim }

    /// - maxTokens: tokens per step at most (the engine's token budget); maxRows: sequences per step at most.
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
        profiler = CUDAStepProfiler(cuda)

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
        self.weights = try CUDALlamaWeights(weights, cuda: cuda, kernels: kernels, stream: stream)
        try stream.synchronize()
    }

    /// Capture decode-only steps in CUDA graphs (one per batch bucket, length bucket and KV store), replayed with
    /// new metadata each step: ~300 launches become one. Padded lanes have length 0 and write nothing.
    public var useGraphs = false
    /// Time each phase of a step with events (plain launches only: turns graphs off), summed over steps in
    /// `profile` (milliseconds by phase) — where a step's time goes.
    public var profiling = false { didSet { if profiling { useGraphs = false } } }
    public var profile: [String: Double] { profiler.milliseconds }
    public var profiledSteps: Int { profiler.steps }
    public func resetProfile() { profiler.reset() }
    /// Graph replays and captures so far.
    public var graphReplays: Int { graphs.replays }
    public var graphCaptures: Int { graphs.captures }

    public func bindCallingThread() throws { try device.bindCallingThread() }

    public func run(_ chunks: [SequenceChunk], kv: any KVStore, sampling: [TokenDraw]) throws -> [TokenID] {
        try bindCallingThread()
        let step = try pack(chunks, kv: kv, draws: sampling)
        guard step.metadata.tokens > 0 else { return [] }
        try execute(step, kv: kv)
        try stream.synchronize()
        if profiling { try profiler.collect() }
        guard step.metadata.logitRows > 0 else { return [] }
        return try sampled.download(Int32.self, count: step.metadata.realRows).map { TokenID($0) }
    }

    /// The logits of the last token of every chunk that wants them (for checks against a reference).
    public func logits(_ chunks: [SequenceChunk], kv: any KVStore) throws -> [[Float]] {
        try bindCallingThread()
        let want = chunks.filter(\.wantsLogits).count
        let step = try pack(chunks, kv: kv,
                            draws: Array(repeating: TokenDraw(parameters: .greedy, uniform: 0), count: want))
        try execute(step, kv: kv)
        try stream.synchronize()
        if profiling { try profiler.collect() }
        let v = hyperparameters.vocabSize
        let all = try logits.download(Float.self, count: step.metadata.realRows * v)
        return (0..<step.metadata.realRows).map { Array(all[($0 * v)..<(($0 + 1) * v)]) }
    }

    /// One step as launched: its packed metadata (uploaded), the chunks, and the decode geometry.
    private struct Step {
        var metadata: StepMetadata
        var chunks: [SequenceChunk]
        var decode: (DecodeShape, DecodeWorkspace)?
        /// Set for decode-only steps when graphs are on.
        var graphKey: CUDAGraphCache.Key?
        /// Device address of a packed metadata array.
        var base: UInt64
        func at(_ field: KeyPath<StepMetadata.Offsets, Int>) -> UInt64 { metadata.address(field, at: base) }
    }

    /// Packs the step's metadata and uploads it (one copy).
    private func pack(_ chunks: [SequenceChunk], kv: any KVStore, draws: [TokenDraw]) throws -> Step {
        precondition(kv.location == .device, "the CUDA model reads K/V from device memory; this store is on the host")
        var tables: StepMetadata.BlockTables?
        if case .paged(let p) = kv.binding(layer: 0) {
            tables = StepMetadata.BlockTables(stride: p.tableStride, table: p.blockTable(slot:))
        }
        let metadata = StepMetadata(chunks: chunks, draws: draws, blockTables: tables, maxRows: maxRows)
        var step = Step(metadata: metadata, chunks: chunks, base: self.metadata.address)
        guard metadata.tokens > 0 else { return step }
        precondition(metadata.tokens <= maxTokens, "\(metadata.tokens) tokens in a step; the model was built for \(maxTokens)")
        precondition(metadata.logitRows <= maxRows, "\(metadata.logitRows) logits rows; built for \(maxRows)")
        if metadata.words.count * 4 > self.metadata.byteCount {  // long block tables: grow (drops stale graphs)
            self.metadata = try DeviceBuffer(cuda, byteCount: metadata.words.count * 8)
            graphs.removeAll()
            step.base = self.metadata.address
        }
        try self.metadata.upload(metadata.words)
        if metadata.decodes > 0 {
            step.decode = try decodeWorkspace(batch: metadata.decodes, maxLength: metadata.maxDecodeLength,
                                              maxContext: kv.maxContext)
        }
        if useGraphs && metadata.decodeOnly {
            step.graphKey = CUDAGraphCache.Key(store: ObjectIdentifier(kv), batch: metadata.decodes,
                                               length: step.decode!.0.maxLength)
        }
        return step
    }

    /// Queues the step: replays (or captures, then replays) its graph, or launches everything directly.
    private func execute(_ step: Step, kv: any KVStore) throws {
        guard let key = step.graphKey else { return try enqueue(step, kv: kv) }
        try graphs.launch(key, on: stream) { try enqueue(step, kv: kv) }
    }

    private func mark(_ phase: String) throws {
        if profiling { try profiler.mark(phase, on: stream) }
    }

    /// Queues the forward pass and the sampler on the stream (capturable: no allocation, no synchronization).
    private func enqueue(_ step: Step, kv: any KVStore) throws {
        let hp = hyperparameters
        let dModel = hp.embeddingLength, ffn = hp.feedForwardLength
        let qkvDim = qDim + 2 * kvDim
        let m = step.metadata
        let n = m.tokens
        let layers = weights.layers

        try mark("start")
        try kernels.embed(table: weights.embeddings.address, tokens: step.at(\.tokens), n: n, width: dModel,
                          into: x.address, stream: stream)
        try kernels.addRMSNorm(x: x.address, delta: 0, weight: layers[0].attentionNorm.address, into: h.address,
                               rows: n, width: dModel, epsilon: hp.rmsNormEpsilon, stream: stream)
        try mark("embed + RMSNorm")
        for (l, layer) in layers.enumerated() {
            try blas.linear(input: h.address, .bf16, weight: layer.qkv.address, .bf16, output: qkv.address, .bf16,
                            tokens: n, inFeatures: dModel, outFeatures: qkvDim)
            try mark("QKV GEMM")
            try attend(step, kv.binding(layer: l))
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
            let nextNorm = l + 1 < layers.count ? layers[l + 1].attentionNorm : weights.outputNorm
            try kernels.addRMSNorm(x: x.address, delta: delta.address, weight: nextNorm.address, into: h.address,
                                   rows: n, width: dModel, epsilon: hp.rmsNormEpsilon, stream: stream)
            try mark("add + RMSNorm")
        }
        let rows = m.logitRows
        guard rows > 0 else { return }
        try kernels.gatherRows(h.address, rows: step.at(\.wanted), count: rows, width: dModel, into: lastHidden.address,
                               stream: stream)
        try blas.linear(input: lastHidden.address, .bf16, weight: weights.outputHead.address, .bf16,
                        output: logits.address, .fp32, tokens: rows, inFeatures: dModel, outFeatures: hp.vocabSize)
        try mark("LM head")
        try kernels.sample(logits: logits.address, rows: rows, vocab: hp.vocabSize, rowStride: hp.vocabSize,
                           params: step.at(\.samplingParameters), into: sampled.address, stream: stream)
        try mark("sampling")
    }

    /// One layer's RoPE + KV append and attention (batched decode, then each prompt chunk), on the layer's binding.
    private func attend(_ step: Step, _ binding: KVLayerBinding) throws {
        let hp = hyperparameters
        let d = hp.headDim, n = step.metadata.tokens
        let scale = 1 / Float(d).squareRoot()
        let prompts = step.metadata.order.enumerated().dropFirst(step.metadata.decodes)
        func rows(_ ci: Int) -> (query: UInt64, output: UInt64) {
            let offset = UInt64(step.metadata.rowOfChunk[ci] * qDim * 2)
            return (q.address + offset, attention.address + offset)
        }
        switch binding {
        case .strided(let kView, let vView):
            try kernels.ropeAppend(qkv: qkv.address, n: n, qHeads: hp.headCount, kvHeads: hp.headCountKV,
                                   headDim: d, positions: step.at(\.positions), slots: step.at(\.owners),
                                   inverseFrequencies: weights.inverseFrequencies.address, q: q.address, keys: kView,
                                   values: vView, stream: stream)
            try mark("RoPE + KV append")
            if let (shape, workspace) = step.decode {
                try decodeKernels.decode(query: q.address, keys: kView, values: vView, slots: step.at(\.decodeSlots),
                                         lengths: step.at(\.decodeLengths), output: attention.address, shape: shape,
                                         workspace: workspace, scale: scale, stream: stream)
            }
            for (_, ci) in prompts {
                let c = step.chunks[ci], (query, output) = rows(ci)
                let kBase = kView.byteAddress(slot: c.slot, token: 0), vBase = vView.byteAddress(slot: c.slot, token: 0)
                try prefillKernels.launch(
                    query: query, output: output,
                    kv: .contiguous(keys: UInt64(kBase), values: UInt64(vBase), tokenStride: kView.tokenStride,
                                    headStride: kView.headStride),
                    chunkLength: c.tokens.count, offset: c.start, qHeads: hp.headCount, kvHeads: hp.headCountKV,
                    headDim: d, dtype: .bf16, scale: scale, stream: stream)
            }
        case .paged(let p):
            let tables = step.at(\.blockTables)
            let table = DevicePagedKV(keyPool: UInt64(p.keys), valuePool: UInt64(p.values), blockTables: tables,
                                      tableStride: p.tableStride, blockSize: p.blockSize, kvHeads: hp.headCountKV,
                                      headDim: d)
            try kernels.ropeAppend(qkv: qkv.address, n: n, qHeads: hp.headCount, kvHeads: hp.headCountKV,
                                   headDim: d, positions: step.at(\.positions), sequences: step.at(\.owners),
                                   inverseFrequencies: weights.inverseFrequencies.address, q: q.address, kv: table,
                                   stream: stream)
            try mark("RoPE + KV append")
            if let (shape, workspace) = step.decode {
                try decodeKernels.decode(query: q.address, kv: table, lengths: step.at(\.decodeLengths),
                                         output: attention.address, shape: shape, workspace: workspace,
                                         scale: scale, stream: stream)
            }
            for (sequence, ci) in prompts {
                let c = step.chunks[ci], (query, output) = rows(ci)
                try prefillKernels.launch(
                    query: query, output: output,
                    kv: .paged(keys: UInt64(p.keys), values: UInt64(p.values),
                               table: tables + UInt64(sequence * p.tableStride * 4), blockSize: p.blockSize),
                    chunkLength: c.tokens.count, offset: c.start, qHeads: hp.headCount, kvHeads: hp.headCountKV,
                    headDim: d, dtype: .bf16, scale: scale, stream: stream)
            }
        }
    }

    private struct DecodeWorkspaceKey: Hashable { var batch: Int, length: Int }

    /// Decode launches are bucketed (batch and length to powers of two) so split sizes and scratch are reused.
    private func decodeWorkspace(batch: Int, maxLength: Int, maxContext: Int) throws -> (DecodeShape, DecodeWorkspace) {
        let hp = hyperparameters
        // The grid never needs to cover more than the store holds (a paged table is exactly that wide).
        let length = StepMetadata.decodeLengthBucket(maxLength: maxLength, maxContext: maxContext)
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
