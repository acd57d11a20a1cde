import Engine
import Foundation
import Model
import Testing
import VAttention

/// The real SmolLM2 model, shared by the tests of this process. Missing: tests are skipped with a reason locally,
/// and fail in CI (which fetches it first).
enum Fixtures {
    static let isCI = ProcessInfo.processInfo.environment["CI"] != nil
    static let modelPath: String? = try? ModelStore().locate(ModelStore.defaultModel)
    static let runModelTests = modelPath != nil || isCI
    static let skipReason: Comment = "SmolLM2 GGUF not in the model cache (bash scripts/fixtures/fetch_model.sh); CI makes this a failure"

    struct ModelMissing: Error {}

    static let loaded: Result<(GGUFFile, CPULlamaModel, Tokenizer), any Error> = Result {
        guard let p = modelPath else { throw ModelMissing() }
        let file = try GGUFFile(path: p)
        return (file, try CPULlamaModel(file: file), try Tokenizer(file: file))
    }

    static var directory: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures") }

    struct ForwardCase: Decodable {
        struct Top: Decodable { var position: Int; var ids: [Int]; var logits: [Double] }
        var prompt_ids: [Int32]
        var top5: [Top]
        var greedy: [Int32]
    }
    struct Forward: Decodable { var oracle: String; var cases: [ForwardCase] }

    static func forward() throws -> Forward {
        try JSONDecoder().decode(Forward.self, from: Data(contentsOf: directory.appendingPathComponent("smollm2_forward.json")))
    }

    /// A vAttention store on real host memory for the model.
    static func vattentionStore(_ model: CPULlamaModel, slots: Int = 8, maxContext: Int = 1024,
                                layout: KVCacheSpec.Layout = .perLayer, budget: Int = 256 << 20,
                                dtype: KVElementType = .fp32) throws -> VAttentionKVStore {
        let hp = model.hyperparameters
        let spec = KVCacheSpec(layers: hp.blockCount, kvHeads: hp.headCountKV, headDim: hp.headDim, dtype: dtype,
                               maxSlots: slots, maxContext: maxContext, pageSize: 64 << 10, layout: layout)
        return VAttentionKVStore(manager: try KVCacheManager(spec: spec, backend: HostMemoryBackend(), memoryBudget: budget))
    }
}
