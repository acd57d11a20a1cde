import VAttention
/// Causal prefill attention for one sequence on the contiguous KV cache, with
/// chunked prefill: query row i (i in 0..<chunkLength) is position
/// `offset + i` and attends to cached positions `0...offset + i`. The caller
/// must already have appended this chunk's K/V (see `appendKV`).
///
/// - query, output: `[chunkLength, qHeads, headDim]` float32.
///
/// FlashAttention-style tiling: work items are (KV head, tile of
/// `options.queryTile` positions); each streams K/V tiles of `options.keyTile`
/// tokens through an online softmax, so the score matrix is never materialized
/// and each K/V tile is reused by all the tile's query rows and GQA heads.
public func prefillAttention(query: UnsafePointer<Float>, chunkLength: Int, offset: Int,
                             keys: KVTensorView, values: KVTensorView, slot: Int,
                             shape: AttentionShape, scale: Float,
                             output: UnsafeMutablePointer<Float>, options: AttentionOptions = .init()) {
    precondition(keys.dtype == values.dtype)
    prefillImpl(query: query, chunkLength: chunkLength, offset: offset, shape: shape, scale: scale,
                output: output, options: options, converts: keys.dtype != .fp32,
                keys: ContiguousAddress(keys, slot: slot), values: ContiguousAddress(values, slot: slot))
}

/// Paged twin of `prefillAttention`: reads sequence `sequence`'s tokens
/// through its block tables. Same loops; only addressing differs.
public func prefillAttention(query: UnsafePointer<Float>, chunkLength: Int, offset: Int,
                             keys: PagedKV, values: PagedKV, sequence: Int,
                             shape: AttentionShape, scale: Float,
                             output: UnsafeMutablePointer<Float>, options: AttentionOptions = .init()) {
    precondition(keys.elementType == values.elementType)
    precondition(keys.kvHeads == shape.kvHeads && keys.headDim == shape.headDim
                 && values.kvHeads == shape.kvHeads && values.headDim == shape.headDim)
    let total = offset + chunkLength
    precondition(keys.blockTables[sequence].count * keys.blockSize >= total
                 && values.blockTables[sequence].count * values.blockSize >= total,
                 "block table too short for \(total) tokens")
    prefillImpl(query: query, chunkLength: chunkLength, offset: offset, shape: shape, scale: scale,
                output: output, options: options, converts: keys.elementType != .fp32,
                keys: PagedAddress(keys, sequence: sequence), values: PagedAddress(values, sequence: sequence))
}

func prefillImpl<A: KVSequenceAddress>(query: UnsafePointer<Float>, chunkLength: Int, offset: Int,
                                       shape: AttentionShape, scale: Float,
                                       output: UnsafeMutablePointer<Float>, options: AttentionOptions,
                                       converts: Bool, keys: A, values: A) {
    precondition(chunkLength >= 0 && offset >= 0)
    let d = shape.headDim, g = shape.group, kvHeads = shape.kvHeads, qHeads = shape.qHeads
    let qTile = options.queryTile, kTile = options.keyTile
    let qTiles = (chunkLength + qTile - 1) / qTile
    let shared = SendablePointer((query, output))
    let kernels = FloatKernels(options.instructionSet)
    // Later query tiles see more keys: hand them out first for better balance.
    parallelFor(qTiles * kvHeads, threads: options.threads) { item in
        let (query, output) = shared.p
        let tileIndex = qTiles - 1 - item / kvHeads
        let h = item % kvHeads
        let p0 = tileIndex * qTile
        let positions = min(qTile, chunkLength - p0)
        let ws = TileWorkspace(rows: positions * g, headDim: d, tile: kTile, converts: converts, transposed: true,
                               kernels: kernels)
        defer { ws.deallocate() }
        for qi in 0..<positions {
            for r in 0..<g {
                ws.setRow(qi * g + r, query: query + ((p0 + qi) * qHeads + h * g + r) * d,
                          scale: scale, limit: offset + p0 + qi)
            }
        }
        let end = offset + p0 + positions  // exclusive: last row sees up to end - 1
        var t = 0
        while t < end {
            let n = min(kTile, end - t)
            attendTile(ws, keys: keys, values: values, head: h, from: t, count: n)
            t += n
        }
        for qi in 0..<positions {
            for r in 0..<g {
                let row = qi * g + r
                let out = output + ((p0 + qi) * qHeads + h * g + r) * d
                let acc = ws.acc + row * d
                let inv = Float(1 / ws.l[row])
                for j in 0..<d { out[j] = acc[j] * inv }
            }
        }
    }
}
