import CFloatKernels

// Shared inner loops of decode and prefill (internal). A work item owns R
// query rows (one KV head's group of query heads, times a few query positions
// in prefill) and streams K/V tiles through an online softmax (FlashAttention
// style): per row a running max m, float64 sum l and float32 accumulator.
// Only `gatherRows` touches K/V memory, through a `KVSequenceAddress`, so the
// contiguous (vAttention) and paged (vLLM) kernels share everything else.

/// Scratch for one work item, carved out of a single allocation, and its C view (`vf_tile`) for the float kernels.
/// Rows are stored one after the other (`transposed` false: decode, few rows, one dot product per score) or as the
/// columns of a matrix with the head dimension as rows (`transposed` true: prefill, many rows, scores a vector of
/// rows at a time); see CFloatKernels' `vf_attend_fn`.
struct TileWorkspace {
    let rows: Int          // R
    let headDim: Int
    let tile: Int          // key tile length
    let transposed: Bool
    /// Row layout: the stride of a row's scores (tile rounded up to 16). Transposed: R rounded up to 16.
    let ld: Int
    let q: UnsafeMutablePointer<Float>        // R × d (row layout) or d × ld (transposed), pre-scaled
    let acc: UnsafeMutablePointer<Float>      // R × d
    let m: UnsafeMutablePointer<Float>        // R, or ld
    let l: UnsafeMutablePointer<Double>       // R, or ld
    let limit: UnsafeMutablePointer<Int>      // R: last key position row r may see
    let kRows: UnsafeMutablePointer<UnsafePointer<Float>?>   // tile
    let vRows: UnsafeMutablePointer<UnsafePointer<Float>?>   // tile
    let kConv: UnsafeMutablePointer<Float>    // tile × d (fp16/bf16 only)
    let vConv: UnsafeMutablePointer<Float>
    let state: vf_tile
    let attend: vf_attend_fn
    private let raw: UnsafeMutableRawPointer

    init(rows: Int, headDim: Int, tile: Int, converts: Bool, transposed: Bool, kernels: FloatKernels) {
        self.rows = rows
        self.headDim = headDim
        self.tile = tile
        self.transposed = transposed
        let align = Int(VF_ROW_ALIGN)
        ld = transposed ? (rows + align - 1) / align * align : (tile + align - 1) / align * align
        let perRow = transposed ? ld : rows
        let conv = converts ? tile * headDim : 0
        var bytes = 0
        func take(_ n: Int, _ size: Int) -> Int { let o = (bytes + 63) & ~63; bytes = o + n * size; return o }
        let qCount = transposed ? headDim * ld : rows * headDim, sCount = transposed ? tile * ld : rows * ld
        let oQ = take(qCount, 4), oAcc = take(rows * headDim, 4), oM = take(perRow, 4)
        let oL = take(perRow, 8), oLim = take(rows, 8), oS = take(sCount, 4), oC = take(perRow, 4)
        let oKR = take(tile, 8), oVR = take(tile, 8), oKC = take(conv, 4), oVC = take(conv, 4)
        raw = .allocate(byteCount: bytes, alignment: 64)
        q = (raw + oQ).bindMemory(to: Float.self, capacity: qCount)
        acc = (raw + oAcc).bindMemory(to: Float.self, capacity: rows * headDim)
        m = (raw + oM).bindMemory(to: Float.self, capacity: perRow)
        l = (raw + oL).bindMemory(to: Double.self, capacity: perRow)
        limit = (raw + oLim).bindMemory(to: Int.self, capacity: rows)
        let s = (raw + oS).bindMemory(to: Float.self, capacity: sCount)
        let correction = (raw + oC).bindMemory(to: Float.self, capacity: perRow)
        kRows = (raw + oKR).bindMemory(to: UnsafePointer<Float>?.self, capacity: tile)
        vRows = (raw + oVR).bindMemory(to: UnsafePointer<Float>?.self, capacity: tile)
        kConv = (raw + oKC).bindMemory(to: Float.self, capacity: conv)
        vConv = (raw + oVC).bindMemory(to: Float.self, capacity: conv)
        // Padding rows of the transposed layout: zero queries, and a softmax state that never sees a key.
        q.initialize(repeating: 0, count: qCount)
        m.initialize(repeating: -.infinity, count: perRow)
        l.initialize(repeating: 0, count: perRow)
        state = vf_tile(rows: Int32(rows), head_dim: Int32(headDim), ld: Int32(ld), q: q, acc: acc, m: m, l: l,
                        limit: limit, s: s, correction: correction)
        attend = (transposed ? kernels.table.attend_transposed : kernels.table.attend)!
    }

    func deallocate() { raw.deallocate() }

    /// Loads query row `r` (scaled by `scale`) and resets its softmax state.
    @inline(__always)
    func setRow(_ r: Int, query: UnsafePointer<Float>, scale: Float, limit lim: Int) {
        if transposed {
            for j in 0..<headDim { q[j &* ld &+ r] = query[j] * scale }
        } else {
            let dst = q + r &* headDim
            for j in 0..<headDim { dst[j] = query[j] * scale }
        }
        (acc + r &* headDim).update(repeating: 0, count: headDim)
        m[r] = -.infinity
        l[r] = 0
        limit[r] = lim
    }
}

/// Fills `rows[0..<n]` with float32 row pointers to K or V of `head` for
/// tokens `t0..<t0+n`: straight into the cache for fp32, converted into
/// `conv` otherwise. Consults the addressing once per contiguous run.
@inline(__always)
func gatherRows<A: KVSequenceAddress>(_ a: A, head: Int, from t0: Int, count n: Int, headDim d: Int,
                                      rows: UnsafeMutablePointer<UnsafePointer<Float>?>,
                                      conv: UnsafeMutablePointer<Float>) {
    let headOffset = head &* a.strideHead
    let stride = a.strideToken
    let type = a.elementType
    var i = 0
    while i < n {
        let (offset, runLength) = a.run(from: t0 &+ i)
        let count = min(runLength, n &- i)
        var o = offset &+ headOffset
        if type == .fp32 {
            let f = a.base.assumingMemoryBound(to: Float.self)
            for j in 0..<count {
                rows[i &+ j] = UnsafePointer(f + o)
                o &+= stride
            }
        } else {
            for j in 0..<count {
                let dst = conv + (i &+ j) &* d
                convertRow(type, a.base, offset: o, dst, count: d)
                rows[i &+ j] = UnsafePointer(dst)
                o &+= stride
            }
        }
        i &+= count
    }
}

/// Attends all rows of `ws` to key tokens `t0..<t0+n` (rows whose `limit` is
/// below a token skip it: the causal mask), updating the online softmax state.
/// The K/V rows are found (and converted) here; the arithmetic is the C kernel's.
@inline(__always)
func attendTile<A: KVSequenceAddress>(_ ws: TileWorkspace, keys: A, values: A, head: Int, from t0: Int, count n: Int) {
    var maxValid = 0
    for r in 0..<ws.rows { maxValid = max(maxValid, min(max(ws.limit[r] &+ 1 &- t0, 0), n)) }
    if maxValid == 0 { return }
    gatherRows(keys, head: head, from: t0, count: maxValid, headDim: ws.headDim, rows: ws.kRows, conv: ws.kConv)
    gatherRows(values, head: head, from: t0, count: maxValid, headDim: ws.headDim, rows: ws.vRows, conv: ws.vConv)
    withUnsafePointer(to: ws.state) { ws.attend($0, ws.kRows, ws.vRows, t0, Int32(maxValid)) }
}

/// Sendable wrapper for raw pointers handed to `parallelFor` bodies; each
/// work item writes a disjoint region, which is what makes this sound.
struct SendablePointer<T>: @unchecked Sendable {
    let p: T
    init(_ p: T) { self.p = p }
}

