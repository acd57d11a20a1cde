import CQuantKernels
import Kernels
import Model

/// Moved to Kernels (the float kernels are built per instruction set too); named here as well so that code which
/// imports only Engine keeps compiling.
public typealias CPUInstructionSet = Kernels.CPUInstructionSet

extension CPUInstructionSet {
    /// The integer matmul kernels, or nil where this CPU cannot run them.
    var kernels: UnsafePointer<vq_kernels>? { vq_kernels_for(vq_isa(UInt32(rawValue))) }
}

/// How finely the integer kernels quantize each block of 32 activations.
public enum ActivationPrecision: Sendable, Equatable {
    /// 8 bits: d·q, error ≤ d/2 (llama.cpp's Q8_0/Q8_1). SmolLM2's logits move by up to ~1 from the float32 path.
    case int8
    /// 8 bits and an 8-bit residual: d·(q + r/128), error ≤ d/256, one more multiply-add per product. Logits stay
    /// within 0.05 of HF transformers' float32 (the fixture tests).
    case int16
}

/// How `CPULlamaModel` multiplies activations by its weights.
public enum CPUMatmul: Sendable, Equatable, CustomStringConvertible {
    /// Each weight row dequantized to float32 for a float dot product: the reference. F32, F16 and BF16 weights
    /// always take this path.
    case float32
    /// Each input row quantized once per block of 32, then dotted with Q4_0, Q4_1 and Q8_0 weights in their stored
    /// format with integer multiply-adds on the given instruction set.
    case integer(CPUInstructionSet, ActivationPrecision)

    /// Integer kernels on the best instruction set of this machine, 16-bit activations.
    public static var best: CPUMatmul { .integer(.best, .int16) }

    public var description: String {
        switch self {
        case .float32: "float32 matmul"
        case .integer(let isa, .int16): "integer matmul on \(isa)"
        case .integer(let isa, .int8): "integer matmul on \(isa), 8-bit activations"
        }
    }
}

/// A weight matrix with the kernel that multiplies by it, chosen once when the model loads.
struct Linear: @unchecked Sendable {
    let weight: WeightTensor
    /// The integer kernel for the weight's format, or nil for the float32 path.
    let kernel: vq_matmul_fn?
    /// Whether the kernel reads the activations' residual bytes as well (16-bit activations).
    let residual: Bool

    init(_ weight: WeightTensor, _ matmul: CPUMatmul) {
        self.weight = weight
        guard case .integer(let isa, let precision) = matmul, let kernels = isa.kernels?.pointee else {
            kernel = nil
            residual = false
            return
        }
        residual = precision == .int16
        switch weight.type {
        case .q4_0: kernel = residual ? kernels.q4_0_residual : kernels.q4_0
        case .q4_1: kernel = residual ? kernels.q4_1_residual : kernels.q4_1
        case .q8_0: kernel = residual ? kernels.q8_0_residual : kernels.q8_0
        case .f32, .f16, .bf16: kernel = nil
        }
    }
}

/// Scratch for input rows quantized for the integer kernels: per token, `k` int8, `k / 32` block scales and block
/// sums, for up to `capacity` elements (tokens × k).
struct QuantizedRows {
    let capacity: Int
    private let qs: UnsafeMutablePointer<Int8>
    private let residuals: UnsafeMutablePointer<Int8>
    private let scales: UnsafeMutablePointer<Float>
    private let sums: UnsafeMutablePointer<Float>

    init(capacity: Int) {
        self.capacity = capacity
        qs = .allocate(capacity: max(capacity, 1))
        residuals = .allocate(capacity: max(capacity, 1))
        scales = .allocate(capacity: max(capacity / 32, 1))
        sums = .allocate(capacity: max(capacity / 32, 1))
    }

    func free() {
        qs.deallocate()
        residuals.deallocate()
        scales.deallocate()
        sums.deallocate()
    }

    /// Quantizes `tokens` rows of `k` floats, each row on its own (so in parallel when there are many), with
    /// residual bytes or without, by the best instruction set's code or the one given (every one gives the same
    /// bytes).
    func quantize(_ x: UnsafePointer<Float>, k: Int, tokens: Int, residual: Bool,
                  instructionSet: CPUInstructionSet? = nil) -> vq_activations {
        precondition(tokens * k <= capacity && k % 32 == 0)
        let nb = k / 32
        // Items of 8 rows from 16 rows on; fewer rows are one item.
        let tokensPerItem = tokens >= 16 ? 8 : max(tokens, 1)
        let scratch = SendableScratch(qs: qs, residuals: residual ? residuals : nil, scales: scales, sums: sums)
        let input = SendablePointer(UnsafeMutablePointer(mutating: x))
        let quantizeRows = (instructionSet ?? .best).kernels!.pointee.quantize!
        parallelFor((tokens + tokensPerItem - 1) / tokensPerItem) { item in
            let first = item * tokensPerItem
            let count = min(tokensPerItem, tokens - first)
            quantizeRows(input.pointer + first * k, Int32(count), Int32(k), scratch.qs + first * k,
                         scratch.residuals.map { $0 + first * k }, scratch.scales + first * nb,
                         scratch.sums + first * nb)
        }
        return vq_activations(qs: qs, residual: residual ? residuals : nil, d: scales, sum: sums, k: Int32(k))
    }
}

/// Rows per work item of a parallel matmul: a multiple of every kernel's row tile.
private let rowsPerItem = 32

/// For each (linear, output): output[t, m] = W[m, :] · x[t, :] for `tokens` input rows of `x`, in one parallel
/// pass over all of their rows. Linears with an integer kernel read `x` through `quantized` (quantized here, once,
/// when any of them needs it); the others dequantize each weight row once and take float dot products.
///
/// A token's result never depends on what else is in the batch: the float path takes the same dot products in the
/// same order whatever the number of tokens, and every integer kernel computes each (row, token) by the same
/// operations in any tile. Batched, chunked and preempted-then-recomputed requests give the same numbers.
func multiply(_ products: [(Linear, UnsafeMutablePointer<Float>)], _ x: UnsafePointer<Float>, tokens: Int,
            quantized: QuantizedRows) {
    let k = products[0].0.weight.rowLength
    precondition(products.allSatisfy { $0.0.weight.rowLength == k && $0.0.residual == products[0].0.residual })
    let activations = SendableActivations(
        value: products.contains { $0.0.kernel != nil }
            ? quantized.quantize(x, k: k, tokens: tokens, residual: products[0].0.residual) : nil)
    // What the items need of each product, on the stack and without references: the work of a decode step is
    // ~200 of these calls, and arrays (and the weights' retains) per call showed up in its profile.
    withUnsafeTemporaryAllocation(of: MatmulProduct.self, capacity: products.count) { buffer in
        var items = 0
        for (i, (linear, y)) in products.enumerated() {
            let w = linear.weight
            let count = (w.rowCount + rowsPerItem - 1) / rowsPerItem
            buffer.initializeElement(at: i, to: MatmulProduct(
                kernel: linear.kernel, weights: w.data.baseAddress!, rowBytes: w.rowBytes, rows: w.rowCount,
                firstItem: items, items: count, y: y))
            items += count
        }
        let table = SendablePointer(buffer.baseAddress!)
        let input = SendablePointer(UnsafeMutablePointer(mutating: x))
        let all = UncheckedSendable(products)  // read only, for the float32 path
        parallelFor(items) { item in
            var p = table.pointer
            while item >= p.pointee.firstItem + p.pointee.items { p += 1 }
            let product = p.pointee
            let begin = (item - product.firstItem) * rowsPerItem, end = min(product.rows, begin + rowsPerItem)
            if let kernel = product.kernel, let x = activations.value {
                kernel(product.weights, product.rowBytes, Int32(begin), Int32(end), x, Int32(tokens), product.y,
                       product.rows)
            } else {
                floatRows(all.value[p - table.pointer].0.weight, begin..<end, input.pointer, tokens: tokens, product.y)
            }
        }
        buffer.deinitialize()
    }
}

/// A value handed to `parallelFor` bodies that only read it.
private struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// One product of `multiply` as its parallel items see it.
private struct MatmulProduct {
    let kernel: vq_matmul_fn?
    let weights: UnsafeRawPointer
    let rowBytes: Int
    let rows: Int
    /// Its items: firstItem ..< firstItem + items, `rowsPerItem` rows each.
    let firstItem: Int
    let items: Int
    let y: UnsafeMutablePointer<Float>
}

/// One linear, for callers with a single product.
func multiply(_ linear: Linear, _ x: UnsafePointer<Float>, tokens: Int, _ y: UnsafeMutablePointer<Float>,
            quantized: QuantizedRows) {
    multiply([(linear, y)], x, tokens: tokens, quantized: quantized)
}

/// The float32 path for `rows` of `w`: each row dequantized once, then one dot product per token.
private func floatRows(_ w: WeightTensor, _ rows: Range<Int>, _ x: UnsafePointer<Float>, tokens: Int,
                       _ y: UnsafeMutablePointer<Float>) {
    let k = w.rowLength, m = w.rowCount
    let row = UnsafeMutablePointer<Float>.allocate(capacity: k)
    defer { row.deallocate() }
    for r in rows {
        Quant.dequantize(w.type, w.rowData(r), into: row, count: k)
        for t in 0..<tokens { y[t * m + r] = dot(row, x + t * k, k) }
    }
}

/// Float dot product with 16 lanes, summed in a fixed order.
@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>()
    var i = 0
    while i + 16 <= n {
        let va = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD16<Float>.self)
        let vb = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD16<Float>.self)
        acc += va * vb
        i += 16
    }
    var s = acc.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// A pointer handed to `parallelFor` bodies, which write disjoint ranges.
struct SendablePointer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ p: UnsafeMutablePointer<T>) { pointer = p }
}

/// `QuantizedRows`' buffers handed to `parallelFor` bodies, which write disjoint rows.
private struct SendableScratch: @unchecked Sendable {
    let qs: UnsafeMutablePointer<Int8>, residuals: UnsafeMutablePointer<Int8>?
    let scales: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>
}

/// Quantized activations handed to `parallelFor` bodies, which only read them.
private struct SendableActivations: @unchecked Sendable {
    let value: vq_activations?
}
