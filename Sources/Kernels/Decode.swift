import VAttention
/// Decode attention on the contiguous (vAttention) KV cache: one query token
/// per sequence attends to its first `lengths[s]` cached tokens in slot
/// `slots[s]`.
///
/// - query: `[lengths.count, qHeads, headDim]` float32.
/// - output: `[lengths.count, qHeads, headDim]` float32 (zeros for length 0).
/// - scale: softmax scale applied to q·k (usually 1/sqrt(headDim)).
///
/// Split-KV like GPU flash-decoding: each (sequence, KV head, chunk of
/// `options.kvChunk` tokens) is an independent work item producing a partial
/// (max, sum, acc) for the group's query heads; partials are then combined by
/// `mergeAttentionPartials`. Short batches still spread over all threads.
public func decodeAttention(query: UnsafePointer<Float>, keys: KVTensorView, values: KVTensorView,
                            slots: [Int], lengths: [Int], shape: AttentionShape, scale: Float,
                            output: UnsafeMutablePointer<Float>, options: AttentionOptions = .init()) {
    precondition(slots.count == lengths.count, "one slot per sequence")
    precondition(keys.dtype == values.dtype)
    decodeImpl(query: query, lengths: lengths, shape: shape, scale: scale, output: output,
               options: options, converts: keys.dtype != .fp32) { s in
        (ContiguousAddress(keys, slot: slots[s]), ContiguousAddress(values, slot: slots[s]))
    }
}

/// Paged twin of `decodeAttention`: sequence `s` reads its tokens through
/// `keys.blockTables[s]` / `values.blockTables[s]`. Same math, same loops;
/// only the token addressing differs.
public func decodeAttention(query: UnsafePointer<Float>, keys: PagedKV, values: PagedKV,
                            lengths: [Int], shape: AttentionShape, scale: Float,
                            output: UnsafeMutablePointer<Float>, options: AttentionOptions = .init()) {
    precondition(keys.elementType == values.elementType)
    precondition(keys.kvHeads == shape.kvHeads && keys.headDim == shape.headDim
                 && values.kvHeads == shape.kvHeads && values.headDim == shape.headDim)
    for (s, n) in lengths.enumerated() {
        precondition(keys.blockTables[s].count * keys.blockSize >= n && values.blockTables[s].count * values.blockSize >= n,
                     "block table of sequence \(s) too short for \(n) tokens")
    }
    decodeImpl(query: query, lengths: lengths, shape: shape, scale: scale, output: output,
               options: options, converts: keys.elementType != .fp32) { s in
        (PagedAddress(keys, sequence: s), PagedAddress(values, sequence: s))
    }
}

func decodeImpl<A: KVSequenceAddress>(query: UnsafePointer<Float>, lengths: [Int], shape: AttentionShape,
                                      scale: Float, output: UnsafeMutablePointer<Float>,
                                      options: AttentionOptions, converts: Bool,
                                      address: @Sendable (Int) -> (A, A)) {
    let seqs = lengths.count
    let d = shape.headDim, g = shape.group, kvHeads = shape.kvHeads, qHeads = shape.qHeads
    let chunk = options.kvChunk
    let tile = min(options.keyTile, chunk)
    var chunks = [Int](repeating: 0, count: seqs)
    var items: [(Int32, Int32, Int32)] = []
    for s in 0..<seqs {
        precondition(lengths[s] >= 0)
        chunks[s] = (lengths[s] + chunk - 1) / chunk
        for h in 0..<kvHeads { for c in 0..<chunks[s] { items.append((Int32(s), Int32(h), Int32(c))) } }
    }
    let maxChunks = chunks.max() ?? 0
    let partialCount = seqs * qHeads * maxChunks
    let maxes = UnsafeMutablePointer<Float>.allocate(capacity: partialCount)
    let sums = UnsafeMutablePointer<Double>.allocate(capacity: partialCount)
    let accs = UnsafeMutablePointer<Float>.allocate(capacity: partialCount * d)
    defer { maxes.deallocate(); sums.deallocate(); accs.deallocate() }

    let shared = SendablePointer((query, maxes, sums, accs, output))
    let kernels = FloatKernels(options.instructionSet)
    let itemsCopy = items
    let chunkCounts = chunks
    parallelFor(items.count, threads: options.threads) { i in
        let (query, maxes, sums, accs, _) = shared.p
        let (s32, h32, c32) = itemsCopy[i]
        let s = Int(s32), h = Int(h32), c = Int(c32)
        let (ka, va) = address(s)
        let length = lengths[s]
        let ws = TileWorkspace(rows: g, headDim: d, tile: tile, converts: converts, transposed: false, kernels: kernels)
        defer { ws.deallocate() }
        for r in 0..<g {
            ws.setRow(r, query: query + ((s * qHeads + h * g + r) * d), scale: scale, limit: length - 1)
        }
        var t = c * chunk
        let end = min(length, t + chunk)
        while t < end {
            let n = min(tile, end - t)
            attendTile(ws, keys: ka, values: va, head: h, from: t, count: n)
            t += n
        }
        for r in 0..<g {
            let idx = (s * qHeads + h * g + r) * maxChunks + c
            maxes[idx] = ws.m[r]
            sums[idx] = ws.l[r]
            (accs + idx * d).update(from: ws.acc + r * d, count: d)
        }
    }
    // Combine: cheap (chunks × d per query head), so threads only for big batches.
    let mergeWork = seqs * qHeads * maxChunks * d
    parallelFor(seqs * qHeads, threads: mergeWork > 1 << 18 ? options.threads : 1) { i in
        let (_, maxes, sums, accs, output) = shared.p
        let s = i / qHeads
        let base = i * maxChunks
        mergeAttentionPartials(count: chunkCounts[s], headDim: d, maxes: maxes + base, sums: sums + base,
                               accs: accs + base * d, output: output + i * d)
    }
}
