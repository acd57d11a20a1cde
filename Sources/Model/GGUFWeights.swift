/// A GGUF file as a weight source: names and layout are already what `LlamaWeights` promises, so tensors are views
/// of the mapping. (A separate type rather than a conformance of `GGUFFile`, because a GGUF file need not hold a
/// Llama model and `hyperparameters` cannot throw.)
public final class GGUFWeights: LlamaWeights, @unchecked Sendable {
    public let file: GGUFFile
    public let hyperparameters: LlamaHyperparameters

    public init(file: GGUFFile) throws {
        self.file = file
        hyperparameters = try LlamaHyperparameters(file: file)
        try hyperparameters.checkTensors(of: file)
    }

    /// Memory-maps and parses the GGUF file at `path`.
    public convenience init(path: String) throws {
        try self.init(file: GGUFFile(path: path))
    }

    public func tensor(_ ggufName: String) throws -> WeightTensor {
        try file.tensor(named: ggufName).weightTensor
    }

    public func hasTensor(_ ggufName: String) -> Bool {
        file.tensorInfo(named: ggufName) != nil
    }
}
