import Kernels
import Model

/// y[t, m] = W[m, :] · x[t, :] for a weight W (rows = outputs) and `tokens` input rows.
///
/// Every product dequantizes the weight row once into float32 and then takes plain dot products in a fixed order,
/// whatever the number of tokens: a token's result never depends on what else is in the batch, so batched,
/// chunked and preempted-then-recomputed requests give the same numbers.
func matmul(_ w: WeightTensor, _ x: UnsafePointer<Float>, tokens: Int, _ y: UnsafeMutablePointer<Float>) {
    let k = w.rowLength, m = w.rowCount
    let rowsPerItem = 16
    let items = (m + rowsPerItem - 1) / rowsPerItem
    let xs = SendablePointer(UnsafeMutablePointer(mutating: x)), ys = SendablePointer(y)
    parallelFor(items) { item in
        let row = UnsafeMutablePointer<Float>.allocate(capacity: k)
        defer { row.deallocate() }
        for r in (item * rowsPerItem)..<min(m, (item + 1) * rowsPerItem) {
            Quant.dequantize(w.type, w.rowData(r), into: row, count: k)
            for t in 0..<tokens { ys.pointer[t * m + r] = dot(row, xs.pointer + t * k, k) }
        }
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
