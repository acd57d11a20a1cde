/// One weight tensor as the forward pass sees it, whatever file it came from: rows of `rowLength` elements of `type`
/// (ggml layout: `rowLength` is the contiguous input dimension, a linear layer has one row per output), `rowBytes`
/// apart. A 1-D tensor (a norm weight) is one row.
///
/// `data` points into a memory-mapped file where the bytes can be used as they are (GGUF, safetensors F32/F16/BF16
/// except the permuted Q/K of an HF checkpoint), or into a `TensorStorage` the tensor owns. `owner` keeps either
/// alive for as long as any copy of the tensor exists.
public struct WeightTensor: @unchecked Sendable {
    /// GGUF name, e.g. "blk.0.attn_q.weight".
    public let name: String
    public let type: GGMLType
    public let rowLength: Int
    public let rowCount: Int
    /// All rows, contiguous.
    public let data: UnsafeRawBufferPointer
    /// What owns `data` (a GGUFFile, a SafetensorsFile, a TensorStorage); never read, only retained.
    public let owner: AnyObject

    public init(name: String, type: GGMLType, rowLength: Int, rowCount: Int, data: UnsafeRawBufferPointer,
                owner: AnyObject) {
        precondition(rowLength > 0 && rowCount > 0 && rowLength % type.blockSize == 0,
                     "tensor '\(name)': bad shape \(rowCount)×\(rowLength) for \(type)")
        precondition(data.count >= rowCount * type.byteCount(elements: rowLength),
                     "tensor '\(name)': \(data.count) bytes for \(rowCount)×\(rowLength) \(type)")
        self.name = name
        self.type = type
        self.rowLength = rowLength
        self.rowCount = rowCount
        self.data = data
        self.owner = owner
    }

    /// An F32 tensor holding a copy of `values` (row-major, `rowCount * rowLength` of them): for tests and small
    /// in-memory models.
    public init(name: String, rowLength: Int, rowCount: Int, values: [Float]) {
        precondition(values.count == rowLength * rowCount, "tensor '\(name)': \(values.count) values for \(rowCount)×\(rowLength)")
        let storage = TensorStorage(byteCount: values.count * 4)
        values.withUnsafeBytes { storage.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        self.init(name: name, type: .f32, rowLength: rowLength, rowCount: rowCount, data: storage.bytes, owner: storage)
    }

    public var elementCount: Int { rowLength * rowCount }
    public var rowBytes: Int { type.byteCount(elements: rowLength) }

    /// The raw bytes of row `i` (no copy).
    public func rowData(_ i: Int) -> UnsafeRawBufferPointer {
        precondition(i >= 0 && i < rowCount, "row \(i) out of range 0..<\(rowCount) for tensor '\(name)'")
        let rb = rowBytes
        return UnsafeRawBufferPointer(rebasing: data[(i * rb)..<((i + 1) * rb)])
    }

    /// Row `i` converted to Float32.
    public func dequantizeRow(_ i: Int) -> [Float] {
        let n = rowLength
        let raw = rowData(i)
        return [Float](unsafeUninitializedCapacity: n) { out, count in
            Quant.dequantize(type, raw, into: out.baseAddress!, count: n)
            count = n
        }
    }

    /// Dot product of row `i` with `x` (x.count must equal rowLength), computed from the stored (quantized) data.
    public func dot(row i: Int, _ x: UnsafeBufferPointer<Float>) -> Float {
        precondition(x.count == rowLength, "vector length \(x.count) != row length \(rowLength)")
        return Quant.dot(type, rowData(i), x.baseAddress!, count: rowLength)
    }

    public func dot(row i: Int, _ x: [Float]) -> Float {
        x.withUnsafeBufferPointer { dot(row: i, $0) }
    }
}

/// Heap bytes owned by the tensors that point into them (permuted copies, generated dummy weights).
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let byteCount: Int

    public init(byteCount: Int) {
        self.byteCount = byteCount
        pointer = .allocate(byteCount: max(byteCount, 1), alignment: 64)
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: byteCount) }

    deinit { pointer.deallocate() }
}

/// Where a Llama-family model's weights come from (a GGUF file, an HF safetensors directory, seeded dummy values).
/// Tensors are asked for by GGUF name; a source translates from its own naming and layout, so every consumer (the
/// CPU forward, the GPU model) sees llama.cpp's layout, including Q/K rows ordered for adjacent-pair RoPE.
///
/// Names asked for: `token_embd.weight`, `output_norm.weight`, `output.weight` (only when
/// `!hyperparameters.tiedEmbeddings`), `rope_freqs.weight` (optional, check `hasTensor`), and per layer N
/// `blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}.weight`.
public protocol LlamaWeights: AnyObject, Sendable {
    var hyperparameters: LlamaHyperparameters { get }
    /// The tensor of that GGUF name; throws `WeightsError.missingTensor` (or a source-specific error) if absent.
    func tensor(_ ggufName: String) throws -> WeightTensor
    /// Whether the source has the tensor (for optional ones such as an untied `output.weight` or `rope_freqs.weight`).
    func hasTensor(_ ggufName: String) -> Bool
}

/// Problems with a weight source that are not about one file format's bytes.
public struct WeightsError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The tensor (GGUF name) or configuration field the problem is about.
    public let field: String
    public let reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public static func missingTensor(_ name: String, in source: String) -> WeightsError {
        WeightsError(field: name, reason: "no such tensor in \(source)")
    }

    public static func shapeMismatch(_ name: String, expected: (rows: Int, rowLength: Int), found: WeightTensor)
        -> WeightsError {
        WeightsError(field: name, reason: "shape is \(found.rowCount)×\(found.rowLength) (rows × row length), "
                     + "expected \(expected.rows)×\(expected.rowLength) from the hyperparameters")
    }

    public var description: String { "weights: \(field): \(reason)" }
}
