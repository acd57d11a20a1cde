/// Dequantization and quantized dot products for the ggml block formats (CPU reference).
///
/// Block layouts (ggml-common.h):
/// - Q4_0: `f16 d; u8 qs[16]` — x[j] = (lo(qs[j]) - 8)·d, x[j+16] = (hi(qs[j]) - 8)·d
/// - Q4_1: `f16 d; f16 m; u8 qs[16]` — x[j] = lo(qs[j])·d + m, x[j+16] = hi(qs[j])·d + m
/// - Q8_0: `f16 d; i8 qs[32]` — x[j] = qs[j]·d
public enum Quant {
    /// IEEE half → float (exact, including subnormals, inf and NaN).
    @inline(__always)
    public static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = UInt32(h >> 10) & 0x1f
        let mant = UInt32(h & 0x3ff)
        if exp == 0 {
            if mant == 0 { return Float(bitPattern: sign) }
            let v = Float(mant) * 5.9604644775390625e-08  // 2^-24
            return sign != 0 ? -v : v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7f80_0000 | (mant << 13)) }
        return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
    }

    @inline(__always)
    public static func bf16ToFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    /// Dequantizes `count` elements (a multiple of the block size) from `raw` into `out`.
    public static func dequantize(_ type: GGMLType, _ raw: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<Float>, count: Int) {
        precondition(count % type.blockSize == 0 && raw.count >= type.byteCount(elements: count))
        let src = raw.baseAddress!
        switch type {
        case .f32:
            for i in 0..<count { out[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .f16:
            for i in 0..<count { out[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .bf16:
            for i in 0..<count { out[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .q4_0:
            for b in 0..<(count / 32) {
                let bp = src + b * 18
                let d = halfToFloat(bp.loadUnaligned(as: UInt16.self))
                let o = out + b * 32
                for j in 0..<16 {
                    let q = bp.load(fromByteOffset: 2 + j, as: UInt8.self)
                    o[j] = Float(Int(q & 0x0f) - 8) * d
                    o[j + 16] = Float(Int(q >> 4) - 8) * d
                }
            }
        case .q4_1:
            for b in 0..<(count / 32) {
                let bp = src + b * 20
                let d = halfToFloat(bp.loadUnaligned(as: UInt16.self))
                let m = halfToFloat(bp.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                let o = out + b * 32
                for j in 0..<16 {
                    let q = bp.load(fromByteOffset: 4 + j, as: UInt8.self)
                    o[j] = Float(q & 0x0f) * d + m
                    o[j + 16] = Float(q >> 4) * d + m
                }
            }
        case .q8_0:
            for b in 0..<(count / 32) {
                let bp = src + b * 34
                let d = halfToFloat(bp.loadUnaligned(as: UInt16.self))
                let o = out + b * 32
                for j in 0..<32 {
                    o[j] = Float(bp.load(fromByteOffset: 2 + j, as: Int8.self)) * d
                }
            }
        }
    }

    /// Dequantizes a whole buffer of `count` elements into a new array.
    public static func dequantize(_ type: GGMLType, _ raw: UnsafeRawBufferPointer, count: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buf, n in
            dequantize(type, raw, into: buf.baseAddress!, count: count)
            n = count
        }
    }

    /// Σ dequant(raw)[i] · x[i] over `count` elements, computed block by block from the quantized data
    /// with 16-wide SIMD accumulators (Float32 accumulation, like ggml's reference path).
    public static func dot(_ type: GGMLType, _ raw: UnsafeRawBufferPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        precondition(count % type.blockSize == 0 && raw.count >= type.byteCount(elements: count))
        let src = raw.baseAddress!
        let xr = UnsafeRawPointer(x)
        switch type {
        case .f32:
            var acc = SIMD16<Float>()
            let n16 = count / 16 * 16
            var i = 0
            while i < n16 {
                let a = src.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
                let b = xr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
                acc.addProduct(a, b)
                i += 16
            }
            var s = acc.sum()
            while i < count {
                s += src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) * x[i]
                i += 1
            }
            return s
        case .f16, .bf16:
            var acc = SIMD16<Float>()
            let n16 = count / 16 * 16
            var i = 0
            let isF16 = type == .f16
            @inline(__always) func conv(_ h: UInt16) -> Float { isF16 ? halfToFloat(h) : bf16ToFloat(h) }
            while i < n16 {
                var a = SIMD16<Float>()
                for l in 0..<16 { a[l] = conv(src.loadUnaligned(fromByteOffset: 2 * (i + l), as: UInt16.self)) }
                acc.addProduct(a, xr.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self))
                i += 16
            }
            var s = acc.sum()
            while i < count {
                s += conv(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) * x[i]
                i += 1
            }
            return s
        case .q4_0:
            var acc = SIMD16<Float>()
            for b in 0..<(count / 32) {
                let bp = src + b * 18
                let d = halfToFloat(bp.loadUnaligned(as: UInt16.self))
                let q = bp.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self)
                let lo = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q & 0x0f) &- 8)
                let hi = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q &>> 4) &- 8)
                let x0 = xr.loadUnaligned(fromByteOffset: 128 * b, as: SIMD16<Float>.self)
                let x1 = xr.loadUnaligned(fromByteOffset: 128 * b + 64, as: SIMD16<Float>.self)
                acc.addProduct(lo * x0 + hi * x1, SIMD16<Float>(repeating: d))
            }
            return acc.sum()
        case .q4_1:
            var acc = SIMD16<Float>()
            for b in 0..<(count / 32) {
                let bp = src + b * 20
                let d = halfToFloat(bp.loadUnaligned(as: UInt16.self))
                let m = halfToFloat(bp.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                let q = bp.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self)
                let lo = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q & 0x0f))
                let hi = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q &>> 4))
                let x0 = xr.loadUnaligned(fromByteOffset: 128 * b, as: SIMD16<Float>.self)
                let x1 = xr.loadUnaligned(fromByteOffset: 128 * b + 64, as: SIMD16<Float>.self)
                acc.addProduct(lo * x0 + hi * x1, SIMD16<Float>(repeating: d))
                acc.addProduct(x0 + x1, SIMD16<Float>(repeating: m))
            }
            return acc.sum()
        case .q8_0:
            var acc = SIMD16<Float>()
            for b in 0..<(count / 32) {
                let bp = src + b * 34
                let d = halfToFloat(bp.loadUnaligned(as: UInt16.self))
                let q0 = bp.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)
                let q1 = bp.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)
                let a0 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q0))
                let a1 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q1))
                let x0 = xr.loadUnaligned(fromByteOffset: 128 * b, as: SIMD16<Float>.self)
                let x1 = xr.loadUnaligned(fromByteOffset: 128 * b + 64, as: SIMD16<Float>.self)
                acc.addProduct(a0 * x0 + a1 * x1, SIMD16<Float>(repeating: d))
            }
            return acc.sum()
        }
    }
}
