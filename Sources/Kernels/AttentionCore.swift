// Shared inner loops of decode and prefill (internal). A work item owns R
// query rows (one KV head's group of query heads, times a few query positions
// in prefill) and streams K/V tiles through an online softmax (FlashAttention
// style): per row a running max m, float64 sum l and float32 accumulator.
// Only `gatherRows` touches K/V memory, through a `KVSequenceAddress`, so the
// contiguous (vAttention) and paged (vLLM) kernels share everything else.

/// Scratch for one work item, carved out of a single allocation.
struct TileWorkspace {
    let rows: Int          // R
    let headDim: Int
    let tile: Int          // key tile length
    let ldS: Int           // tile rounded up to 8
    let q: UnsafeMutablePointer<Float>        // R × d, pre-scaled
    let acc: UnsafeMutablePointer<Float>      // R × d
    let m: UnsafeMutablePointer<Float>        // R
    let l: UnsafeMutablePointer<Double>       // R
    let limit: UnsafeMutablePointer<Int>      // R: last key position row r may see
    let s: UnsafeMutablePointer<Float>        // R × ldS scores / probabilities
    let kRows: UnsafeMutablePointer<UnsafePointer<Float>>   // tile
    let vRows: UnsafeMutablePointer<UnsafePointer<Float>>   // tile
    let kConv: UnsafeMutablePointer<Float>    // tile × d (fp16/bf16 only)
    let vConv: UnsafeMutablePointer<Float>
    private let raw: UnsafeMutableRawPointer

    init(rows: Int, headDim: Int, tile: Int, converts: Bool) {
        self.rows = rows
        self.headDim = headDim
        self.tile = tile
        ldS = (tile + 7) & ~7
        let conv = converts ? tile * headDim : 0
        var bytes = 0
        func take(_ n: Int, _ size: Int) -> Int { let o = (bytes + 63) & ~63; bytes = o + n * size; return o }
        let oQ = take(rows * headDim, 4), oAcc = take(rows * headDim, 4), oM = take(rows, 4)
        let oL = take(rows, 8), oLim = take(rows, 8), oS = take(rows * ldS, 4)
        let oKR = take(tile, 8), oVR = take(tile, 8), oKC = take(conv, 4), oVC = take(conv, 4)
        raw = .allocate(byteCount: bytes, alignment: 64)
        q = (raw + oQ).bindMemory(to: Float.self, capacity: rows * headDim)
        acc = (raw + oAcc).bindMemory(to: Float.self, capacity: rows * headDim)
        m = (raw + oM).bindMemory(to: Float.self, capacity: rows)
        l = (raw + oL).bindMemory(to: Double.self, capacity: rows)
        limit = (raw + oLim).bindMemory(to: Int.self, capacity: rows)
        s = (raw + oS).bindMemory(to: Float.self, capacity: rows * ldS)
        kRows = (raw + oKR).bindMemory(to: UnsafePointer<Float>.self, capacity: tile)
        vRows = (raw + oVR).bindMemory(to: UnsafePointer<Float>.self, capacity: tile)
        kConv = (raw + oKC).bindMemory(to: Float.self, capacity: conv)
        vConv = (raw + oVC).bindMemory(to: Float.self, capacity: conv)
    }

    func deallocate() { raw.deallocate() }

    /// Loads query row `r` (scaled by `scale`) and resets its softmax state.
    @inline(__always)
    func setRow(_ r: Int, query: UnsafePointer<Float>, scale: Float, limit lim: Int) {
        let dst = q + r &* headDim
        for j in 0..<headDim { dst[j] = query[j] * scale }
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
                                      rows: UnsafeMutablePointer<UnsafePointer<Float>>,
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
@inline(__always)
func attendTile<A: KVSequenceAddress>(_ ws: TileWorkspace, keys: A, values: A, head: Int, from t0: Int, count n: Int) {
    let d = ws.headDim
    let rows = ws.rows
    var maxValid = 0
    for r in 0..<rows { maxValid = max(maxValid, min(max(ws.limit[r] &+ 1 &- t0, 0), n)) }
    if maxValid == 0 { return }
    gatherRows(keys, head: head, from: t0, count: maxValid, headDim: d, rows: ws.kRows, conv: ws.kConv)
    gatherRows(values, head: head, from: t0, count: maxValid, headDim: d, rows: ws.vRows, conv: ws.vConv)

    // Scores: token-outer so each K row is read from memory once for all R rows.
    let qRaw = UnsafeRawPointer(ws.q)
    for i in 0..<maxValid {
        let k = UnsafeRawPointer(ws.kRows[i])
        let t = t0 &+ i
        for r in 0..<rows where t <= ws.limit[r] {
            ws.s[r &* ws.ldS &+ i] = dot(qRaw + r &* d &* 4, k, d)
        }
    }

    for r in 0..<rows {
        let valid = min(max(ws.limit[r] &+ 1 &- t0, 0), n)
        if valid == 0 { continue }
        let srow = ws.s + r &* ws.ldS
        let padded = (valid &+ 7) & ~7
        for i in valid..<padded { srow[i] = -.infinity }
        let sRaw = UnsafeMutableRawPointer(srow)

        var mx = SIMD8<Float>(repeating: -.infinity)
        var i = 0
        while i < padded { mx = pointwiseMax(mx, UnsafeRawPointer(sRaw).load8(i)); i &+= 8 }
        let mOld = ws.m[r]
        let mNew = max(mOld, mx.max())
        let correction: Float = mOld == -.infinity ? 0 : exp1(mOld - mNew)
        ws.m[r] = mNew

        var sum0 = SIMD4<Double>(), sum1 = SIMD4<Double>()
        i = 0
        let mv = SIMD8<Float>(repeating: mNew)
        while i < padded {
            let p = exp8(UnsafeRawPointer(sRaw).load8(i) - mv)
            sRaw.store8(p, i)
            sum0 += SIMD4<Double>(p.lowHalf)
            sum1 += SIMD4<Double>(p.highHalf)
            i &+= 8
        }
        ws.l[r] = ws.l[r] * Double(correction) + (sum0 + sum1).sum()

        // acc = acc·correction + Σ p_i v_i, 32 columns at a time kept in registers.
        let accRaw = UnsafeMutableRawPointer(ws.acc + r &* d)
        let c = SIMD8<Float>(repeating: correction)
        var j = 0
        while j &+ 32 <= d {
            var a0 = UnsafeRawPointer(accRaw).load8(j) * c
            var a1 = UnsafeRawPointer(accRaw).load8(j &+ 8) * c
            var a2 = UnsafeRawPointer(accRaw).load8(j &+ 16) * c
            var a3 = UnsafeRawPointer(accRaw).load8(j &+ 24) * c
            for i in 0..<valid {
                let p = SIMD8<Float>(repeating: srow[i])
                let v = UnsafeRawPointer(ws.vRows[i])
                a0 = a0 + p * v.load8(j)
                a1 = a1 + p * v.load8(j &+ 8)
                a2 = a2 + p * v.load8(j &+ 16)
                a3 = a3 + p * v.load8(j &+ 24)
            }
            accRaw.store8(a0, j); accRaw.store8(a1, j &+ 8)
            accRaw.store8(a2, j &+ 16); accRaw.store8(a3, j &+ 24)
            j &+= 32
        }
        while j < d {
            var a0 = UnsafeRawPointer(accRaw).load8(j) * c
            for i in 0..<valid {
                a0 = a0 + SIMD8<Float>(repeating: srow[i]) * UnsafeRawPointer(ws.vRows[i]).load8(j)
            }
            accRaw.store8(a0, j)
            j &+= 8
        }
    }
}

/// Sendable wrapper for raw pointers handed to `parallelFor` bodies; each
/// work item writes a disjoint region, which is what makes this sound.
struct SendablePointer<T>: @unchecked Sendable {
    let p: T
    init(_ p: T) { self.p = p }
}

