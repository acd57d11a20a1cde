// Small SIMD helpers for the kernels (internal). Everything is written with
// plain SIMD8 arithmetic so it vectorizes on baseline x86_64 without libcalls.

extension UnsafeRawPointer {
    @inline(__always)
    func load8(_ elementOffset: Int) -> SIMD8<Float> {
        loadUnaligned(fromByteOffset: elementOffset &* 4, as: SIMD8<Float>.self)
    }
}

extension UnsafeMutableRawPointer {
    @inline(__always)
    func store8(_ v: SIMD8<Float>, _ elementOffset: Int) {
        storeBytes(of: v, toByteOffset: elementOffset &* 4, as: SIMD8<Float>.self)
    }
}

/// Dot product of `n` (multiple of 8) floats.
@inline(__always)
func dot(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Float {
    var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
    var j = 0
    while j &+ 16 <= n {
        s0 = s0 + a.load8(j) * b.load8(j)
        s1 = s1 + a.load8(j &+ 8) * b.load8(j &+ 8)
        j &+= 16
    }
    if j < n { s0 = s0 + a.load8(j) * b.load8(j) }
    return hsum(s0 + s1)
}

/// Tree reduction (3 dependent adds instead of a 7-long serial chain).
@inline(__always)
func hsum(_ v: SIMD8<Float>) -> Float {
    let h = v.lowHalf + v.highHalf
    let q = h.lowHalf + h.highHalf
    return q[0] + q[1]
}

/// e^x for 8 lanes (Cephes expf: round(x/ln2) range reduction + degree-6
/// polynomial, ~1-2 ulp). Inputs below -87.3 (including -inf) give exactly 0,
/// which is what masked scores need. A libm call per score would cost more
/// than the dot products in decode.
@inline(__always)
func exp8(_ xIn: SIMD8<Float>) -> SIMD8<Float> {
    let lo: Float = -87.33654, hi: Float = 88.37626
    var x = xIn
    let underflow = x .< lo
    x.replace(with: lo, where: underflow)
    x.replace(with: hi, where: x .> hi)
    let magic: Float = 12_582_912  // 1.5 * 2^23: adding it rounds to an integer
    let t = x * 1.442_695_04 + magic
    let n = t - magic
    var r = x - n * 0.693_359_375
    r = r - n * -2.121_944_4e-4
    var y: SIMD8<Float> = SIMD8(repeating: 1.987_569_15e-4)
    y = y * r + 1.398_199_950_7e-3
    y = y * r + 8.333_451_907_3e-3
    y = y * r + 4.166_579_589_4e-2
    y = y * r + 1.666_666_545_9e-1
    y = y * r + 5.000_000_120_1e-1
    y = y * (r * r) + r + 1
    let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(SIMD8<Float>(repeating: magic), to: SIMD8<Int32>.self)
    let pow2 = unsafeBitCast((ni &+ 127) &<< 23, to: SIMD8<Float>.self)
    var result = y * pow2
    result.replace(with: 0, where: underflow)
    return result
}

/// Scalar e^x through the same polynomial (keeps the kernels libm-free and consistent).
@inline(__always)
func exp1(_ x: Float) -> Float { exp8(SIMD8(repeating: x))[0] }
