import CUDADriver
import CUDAKernels
import Kernels
import Model

/// A Llama model's weights on one GPU, in bf16 (norm vectors and RoPE frequencies in fp32), with the projections
/// that share an input fused: Q|K|V and gate|up. From any source (GGUF, safetensors: dequantized on the host, rounded
/// to bf16, uploaded); `DummyWeights` are generated on the device with the same formula as on the CPU instead.
final class CUDALlamaWeights {
    struct Layer {
        var attentionNorm: DeviceBuffer, qkv: DeviceBuffer, o: DeviceBuffer
        var ffnNorm: DeviceBuffer, gateUp: DeviceBuffer, down: DeviceBuffer
    }

    let layers: [Layer]
    let embeddings: DeviceBuffer
    /// nil when the output head is tied to the embeddings.
    let output: DeviceBuffer?
    let outputNorm: DeviceBuffer
    /// θ_i for RoPE: the hyperparameters' frequencies, divided by `rope_freqs.weight` if present (llama.cpp's
    /// converter stores Llama 3.1's RoPE scaling as per-pair divisors, as the CPU model applies).
    let inverseFrequencies: DeviceBuffer
    /// Bytes of weights on the device.
    let byteCount: Int

    var outputHead: DeviceBuffer { output ?? embeddings }

    init(_ weights: any LlamaWeights, cuda: CUDA, kernels: LlamaKernels, stream: CUDAStream) throws {
        let hp = weights.hyperparameters
        var bytes = 0
        func account(_ b: DeviceBuffer) -> DeviceBuffer {
            bytes += b.byteCount
            return b
        }
        var inv = hp.ropeInverseFrequencies
        if weights.hasTensor("rope_freqs.weight") {
            let factors = try weights.tensor("rope_freqs.weight").dequantizeRow(0)
            for i in inv.indices { inv[i] /= factors[i] }
        }
        inverseFrequencies = try DeviceBuffer(cuda, byteCount: inv.count * 4)
        try inverseFrequencies.upload(inv)

        let source: Source = if let dummy = weights as? DummyWeights {
            .dummy(seed: dummy.seed, kernels: kernels, stream: stream)
        } else {
            .host(weights)
        }
        let qDim = hp.headCount * hp.headDim, kvDim = hp.headCountKV * hp.headDim
        let dModel = hp.embeddingLength, ffn = hp.feedForwardLength
        embeddings = account(try source.matrix(["token_embd.weight"], rows: [hp.vocabSize], cols: dModel, cuda))
        outputNorm = account(try source.vector("output_norm.weight", count: dModel, cuda))
        output = hp.tiedEmbeddings
            ? nil : account(try source.matrix(["output.weight"], rows: [hp.vocabSize], cols: dModel, cuda))
        layers = try (0..<hp.blockCount).map { i in
            let p = "blk.\(i)."
            return Layer(
                attentionNorm: account(try source.vector(p + "attn_norm.weight", count: dModel, cuda)),
                qkv: account(try source.matrix([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"],
                                               rows: [qDim, kvDim, kvDim], cols: dModel, cuda)),
                o: account(try source.matrix([p + "attn_output.weight"], rows: [dModel], cols: qDim, cuda)),
                ffnNorm: account(try source.vector(p + "ffn_norm.weight", count: dModel, cuda)),
                gateUp: account(try source.matrix([p + "ffn_gate.weight", p + "ffn_up.weight"], rows: [ffn, ffn],
                                                  cols: dModel, cuda)),
                down: account(try source.matrix([p + "ffn_down.weight"], rows: [dModel], cols: ffn, cuda)))
        }
        byteCount = bytes
    }

    /// Where the values come from: a weight source on the host, or the dummy-weight formula run on the device.
    private enum Source {
        case host(any LlamaWeights)
        case dummy(seed: UInt64, kernels: LlamaKernels, stream: CUDAStream)

        /// The named tensors stacked by rows (`rows[i]` rows each, `cols` wide), as one bf16 matrix.
        func matrix(_ names: [String], rows: [Int], cols: Int, _ cuda: CUDA) throws -> DeviceBuffer {
            let total = rows.reduce(0, +)
            let buffer = try DeviceBuffer(cuda, byteCount: total * cols * 2)
            switch self {
            case .host(let weights):
                var host = [UInt16](repeating: 0, count: total * cols)
                var r = 0
                for (name, n) in zip(names, rows) {
                    let t = try weights.tensor(name)
                    guard t.rowCount == n, t.rowLength == cols else {
                        throw WeightsError.shapeMismatch(name, expected: (n, cols), found: t)
                    }
                    for i in 0..<t.rowCount {
                        let row = t.dequantizeRow(i)
                        for j in 0..<cols { host[(r + i) * cols + j] = bf16Bits(row[j]) }
                    }
                    r += t.rowCount
                }
                try buffer.upload(host)
            case .dummy(let seed, let kernels, let stream):
                var offset = 0
                for (name, n) in zip(names, rows) {  // each part under its own GGUF name, as on the CPU
                    try kernels.fillDummy(buffer.address + UInt64(offset * cols * 2), count: n * cols, seed: seed,
                                          nameHash: DummyWeights.nameHash(name), scale: 1 / Float(cols).squareRoot(),
                                          stream: stream)
                    offset += n
                }
            }
            return buffer
        }

        /// A norm vector in fp32 (dummy weights: ones).
        func vector(_ name: String, count: Int, _ cuda: CUDA) throws -> DeviceBuffer {
            let values: [Float]
            switch self {
            case .host(let weights): values = try weights.tensor(name).dequantizeRow(0)
            case .dummy: values = [Float](repeating: 1, count: count)
            }
            let buffer = try DeviceBuffer(cuda, byteCount: values.count * 4)
            try buffer.upload(values)
            return buffer
        }
    }
}
