/// A read-only view of one tensor's data inside a mapped `GGUFFile` (keeps the file alive).
public struct GGUFTensor: @unchecked Sendable {
    public let file: GGUFFile
    public let info: GGUFTensorInfo

    public init(file: GGUFFile, info: GGUFTensorInfo) {
        self.file = file
        self.info = info
    }

    public var name: String { info.name }
    public var type: GGMLType { info.type }
    public var rowLength: Int { info.rowLength }
    public var rowCount: Int { info.rowCount }

    /// The tensor's raw bytes (no copy).
    public var data: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[info.fileOffset..<(info.fileOffset + info.byteCount)])
    }

    /// The raw bytes of row `i` (no copy).
    public func rowData(_ i: Int) -> UnsafeRawBufferPointer { weightTensor.rowData(i) }

    /// Row `i` converted to Float32.
    public func dequantizeRow(_ i: Int) -> [Float] { weightTensor.dequantizeRow(i) }

    /// Dot product of row `i` with `x` (x.count must equal rowLength), computed from the quantized data.
    public func dot(row i: Int, _ x: UnsafeBufferPointer<Float>) -> Float { weightTensor.dot(row: i, x) }

    public func dot(row i: Int, _ x: [Float]) -> Float { weightTensor.dot(row: i, x) }

    /// y[r] = row_r · x for all rows (CPU matvec reference).
    public func matvec(_ x: [Float]) -> [Float] {
        precondition(x.count == rowLength)
        return x.withUnsafeBufferPointer { xp in
            (0..<rowCount).map { dot(row: $0, xp) }
        }
    }
}

extension GGUFTensor {
    /// The same bytes as a source-independent `WeightTensor` (no copy; keeps the file alive).
    public var weightTensor: WeightTensor {
        WeightTensor(name: name, type: type, rowLength: rowLength, rowCount: rowCount, data: data, owner: file)
    }
}
