import VAttention
/// Writes new tokens' K and V into the contiguous cache: token i (rows of
/// `keys`/`values`, each `[tokens, kvHeads, headDim]` float32) goes to
/// (`slots[i]`, `positions[i]`), converted to the cache's element type
/// (round to nearest even). Per-token slot/position covers both a prefill
/// chunk (one slot, consecutive positions) and a batched decode step.
public func appendKV(keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                     slots: [Int], positions: [Int], kvHeads: Int, headDim: Int,
                     into kCache: KVTensorView, _ vCache: KVTensorView) {
    precondition(slots.count == positions.count)
    for i in 0..<slots.count {
        let k = ContiguousAddress(kCache, slot: slots[i]), v = ContiguousAddress(vCache, slot: slots[i])
        writeToken(keys + i * kvHeads * headDim, to: k, position: positions[i], kvHeads: kvHeads, headDim: headDim)
        writeToken(values + i * kvHeads * headDim, to: v, position: positions[i], kvHeads: kvHeads, headDim: headDim)
    }
}

/// Paged twin of `appendKV`: token i goes to position `positions[i]` of
/// sequence `sequences[i]`, located through that sequence's block table
/// (which must already cover the position; see `BlockAllocator`).
public func appendKVPaged(keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                          sequences: [Int], positions: [Int],
                          into kCache: PagedKV, _ vCache: PagedKV) {
    precondition(sequences.count == positions.count)
    precondition(kCache.kvHeads == vCache.kvHeads && kCache.headDim == vCache.headDim)
    let kvHeads = kCache.kvHeads, headDim = kCache.headDim
    for i in 0..<sequences.count {
        let k = PagedAddress(kCache, sequence: sequences[i]), v = PagedAddress(vCache, sequence: sequences[i])
        writeToken(keys + i * kvHeads * headDim, to: k, position: positions[i], kvHeads: kvHeads, headDim: headDim)
        writeToken(values + i * kvHeads * headDim, to: v, position: positions[i], kvHeads: kvHeads, headDim: headDim)
    }
}

@inline(__always)
func writeToken<A: KVSequenceAddress>(_ src: UnsafePointer<Float>, to a: A, position: Int, kvHeads: Int, headDim: Int) {
    precondition(position >= 0)
    let base = a.run(from: position).offset
    let type = a.elementType
    for h in 0..<kvHeads {
        let o = base + h * a.strideHead
        let row = src + h * headDim
        switch type {
        case .fp32:
            (a.base.assumingMemoryBound(to: Float.self) + o).update(from: row, count: headDim)
        case .fp16, .bf16:
            for j in 0..<headDim { type.store(row[j], to: a.base, at: o + j) }
        }
    }
}
