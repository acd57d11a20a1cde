import VAttention

/// How the CPU kernels read and write each element type (the arithmetic is float32 whatever the storage).
extension KVElementType {
    /// Stores `value` converted to this type at element `index` of `base`.
    /// fp16 and bf16 round to nearest even.
    @inlinable
    public func store(_ value: Float, to base: UnsafeMutableRawPointer, at index: Int) {
        switch self {
        case .fp32: base.storeBytes(of: value, toByteOffset: index &* 4, as: Float.self)
        case .fp16: base.storeBytes(of: Float16(value).bitPattern, toByteOffset: index &* 2, as: UInt16.self)
        case .bf16: base.storeBytes(of: bf16Bits(value), toByteOffset: index &* 2, as: UInt16.self)
        }
    }

    /// Loads element `index` of `base` as float32 (exact for all three types).
    @inlinable
    public func load(from base: UnsafeRawPointer, at index: Int) -> Float {
        switch self {
        case .fp32: return base.loadUnaligned(fromByteOffset: index &* 4, as: Float.self)
        case .fp16: return Float(Float16(bitPattern: base.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self)))
        case .bf16: return floatFromBF16(base.loadUnaligned(fromByteOffset: index &* 2, as: UInt16.self))
        }
    }

    /// `value` after a round trip through this type: what a kernel reads back
    /// after `appendKV` stored `value`. Lets references use the same rounded inputs.
    @inlinable
    public func rounded(_ value: Float) -> Float {
        switch self {
        case .fp32: return value
        case .fp16: return Float(Float16(value))
        case .bf16: return floatFromBF16(bf16Bits(value))
        }
    }
}

/// float32 → bfloat16 bits, round to nearest even (what PyTorch/CUDA do),
/// NaN stays a (quiet) NaN instead of rounding into infinity.
@inlinable
public func bf16Bits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
    let lsb = (bits >> 16) & 1
    return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ lsb) >> 16)
}

/// bfloat16 bits → float32 (exact: bf16 is the top half of a float32).
@inlinable
public func floatFromBF16(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

// MARK: - SIMD conversions used by the kernels (internal)

/// 8 fp16 values → float32 with integer ops only. Swift's `Float(Float16)`
/// becomes a libcall per element on baseline x86_64 (no F16C), far too slow
/// for the inner loops. Normals and subnormals: shift the magnitude into
/// float position and rescale by 2^112 (exact); inf/NaN patched separately.
@inline(__always)
func fp16ToFloat8(_ h: SIMD8<UInt16>) -> SIMD8<Float> {
    let u = SIMD8<UInt32>(truncatingIfNeeded: h)
    let sign = (u & 0x8000) &<< 16
    let m15 = u & 0x7FFF
    let scaled = unsafeBitCast(m15 &<< 13, to: SIMD8<Float>.self) * 0x1p112
    // m15 >= 0x7C00 (exponent all ones: inf/NaN) ⇔ bit 15 of m15 + 0x400; then force
    // the float exponent to all ones (pure integer ops: masked selects don't vectorize).
    let special = ((m15 &+ 0x400) &>> 15) &* 0x7F80_0000
    let bits = unsafeBitCast(scaled, to: SIMD8<UInt32>.self) | special | sign
    return unsafeBitCast(bits, to: SIMD8<Float>.self)
}

@inline(__always)
func bf16ToFloat8(_ h: SIMD8<UInt16>) -> SIMD8<Float> {
    unsafeBitCast(SIMD8<UInt32>(truncatingIfNeeded: h) &<< 16, to: SIMD8<Float>.self)
}

/// Converts `count` (multiple of 8) elements of `type` at `src` (element
/// offset `offset`) to float32 in `dst`.
@inline(__always)
func convertRow(_ type: KVElementType, _ src: UnsafeRawPointer, offset: Int,
                _ dst: UnsafeMutablePointer<Float>, count: Int) {
    let d = UnsafeMutableRawPointer(dst)
    switch type {
    case .fp32:
        (dst).update(from: (src + offset &* 4).assumingMemoryBound(to: Float.self), count: count)
    case .fp16:
        let s = src + offset &* 2
        var j = 0
        while j < count {
            let h = s.loadUnaligned(fromByteOffset: j &* 2, as: SIMD8<UInt16>.self)
            d.storeBytes(of: fp16ToFloat8(h), toByteOffset: j &* 4, as: SIMD8<Float>.self)
            j &+= 8
        }
    case .bf16:
        let s = src + offset &* 2
        var j = 0
        while j < count {
            let h = s.loadUnaligned(fromByteOffset: j &* 2, as: SIMD8<UInt16>.self)
            d.storeBytes(of: bf16ToFloat8(h), toByteOffset: j &* 4, as: SIMD8<Float>.self)
            j &+= 8
        }
    }
}
