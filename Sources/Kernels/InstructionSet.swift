import CFloatKernels
import CQuantKernels
#if canImport(Glibc)
import Glibc
#endif

/// The instruction sets the CPU kernels are built for: the integer matmul (target CQuantKernels) and the float
/// kernels of attention, RMSNorm, RoPE and SiLU (CFloatKernels). Each is one set of C functions compiled with its
/// own target attribute, so one binary carries them all and runs on a baseline x86-64; the best one this CPU and
/// OS support is found once (cpuid, xgetbv) and used unless a caller asks for another.
public enum CPUInstructionSet: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// No target attribute: 4-float vectors (SSE2 on x86-64, NEON on arm64) and scalar integer code.
    case portable
    /// AVX2, FMA, F16C.
    case avx2
    /// AVX-512 F, BW, VL, DQ and VNNI (the float kernels use F, BW, VL, DQ).
    case avx512VNNI

    /// The best one this CPU and OS support, found once.
    public static let best = CPUInstructionSet(rawValue: Int(vq_best_isa().rawValue))!

    public var isSupported: Bool { vq_isa_supported(vq_isa(UInt32(rawValue))) != 0 }

    public var description: String {
        switch self {
        case .portable: "portable C"
        case .avx2: "AVX2"
        case .avx512VNNI: "AVX-512 VNNI"
        }
    }
}

/// One instruction set's float kernels (CFloatKernels): RMSNorm, RoPE and SiLU·mul for the forward pass, the
/// attention tile for `decodeAttention` and `prefillAttention` (through `AttentionOptions.instructionSet`).
/// A row's result depends only on that row (batch invariance); instruction sets differ by rounding only.
public struct FloatKernels: @unchecked Sendable {  // a table of C function pointers and a static string
    public let instructionSet: CPUInstructionSet
    let table: vf_kernels

    /// `instructionSet` must be supported by this CPU.
    public init(_ instructionSet: CPUInstructionSet = .best) {
        guard let table = vf_kernels_for(vq_isa(UInt32(instructionSet.rawValue))) else {
            preconditionFailure("this CPU cannot run \(instructionSet) kernels")
        }
        self.instructionSet = instructionSet
        self.table = table.pointee
    }

    /// y[r] = x[r] / √(mean(x[r]²) + ε) ⊙ weight for `rows` rows of `width` floats; sum of squares in float64.
    @inline(__always)
    public func rmsNorm(_ x: UnsafePointer<Float>, rows: Int, width: Int, weight: UnsafePointer<Float>, epsilon: Float,
                        into y: UnsafeMutablePointer<Float>) {
        table.rms_norm(x, Int32(rows), Int32(width), weight, epsilon, y)
    }

    /// Rotates the adjacent pairs of `heads` heads of `headDim` floats at `x` by the angles of `cosSin` (2·headDim
    /// floats: cos θ_i twice per pair, then −sin θ_i, sin θ_i per pair; see `ropeTable`).
    @inline(__always)
    public func rope(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, cosSin: UnsafePointer<Float>) {
        table.rope(x, Int32(heads), Int32(headDim), cosSin)
    }

    /// gate[i] = gate[i] / (1 + e^−gate[i]) · up[i] for `count` floats.
    @inline(__always)
    public func siluMul(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        table.silu_mul(gate, up, count)
    }

    /// e^x by the kernels' polynomial (what softmax and SiLU use), for tests.
    public func exp(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        table.exp(x, y, count)
    }
}

/// The rotation table of one position for `FloatKernels.rope`: 2·headDim floats from the pairs' angles
/// position · inverseFrequencies[i] (cos and sin in float, as the scalar rotation took them).
public func ropeTable(position: Int, inverseFrequencies: [Float], into table: UnsafeMutablePointer<Float>) {
    let d = 2 * inverseFrequencies.count
    for (i, f) in inverseFrequencies.enumerated() {
        let angle = Float(position) * f
        let c = cos(angle), s = sin(angle)
        table[2 * i] = c
        table[2 * i + 1] = c
        table[d + 2 * i] = -s
        table[d + 2 * i + 1] = s
    }
}
