import Engine
import Model
import Testing
import VAttention

/// `EngineBuilder` on the CPU with the real SmolLM2 (context length 8192; 768 bytes of fp32 K or V per token per
/// layer, 30 layers): the context fitted to the model and to the KV budget, budgets too small refused, and the store
/// the config names.
@Suite("Engine builder on SmolLM2", .enabled(if: Fixtures.runModelTests, Fixtures.skipReason))
struct EngineBuilderTests {
    func config(_ change: (inout EngineConfig) -> Void = { _ in }) throws -> EngineConfig {
        guard let path = Fixtures.modelPath else { throw Fixtures.ModelMissing() }
        var c = EngineConfig(model: .gguf(path: path), backend: .cpu, slots: 8)
        change(&c)
        return c
    }

    /// The shared CPU model (the builder's `makeKVStore` needs only its shape).
    var model: CPULlamaModel { get throws { try Fixtures.loaded.get().1 } }

    @Test func buildsTheWholeEngine() throws {
        var notes: [String] = []
        let built = try EngineBuilder(try config(), log: { notes.append($0) }).build()
        #expect(built.engine.model is CPULlamaModel)
        #expect(built.engine.kv is VAttentionKVStore)
        #expect(built.engine.kv.slotCount == 8)
        #expect(built.engine.configuration.tokenBudget == 256 && built.engine.configuration.maxRunning == 8)
        // The default context (2048) is below the model's 8192, and 512 MiB hold it: no note.
        #expect(built.engine.maxContext == 2048)
        #expect(built.notes.isEmpty && notes.isEmpty)
        #expect(built.model.tokenizer != nil && built.model.chatTemplateText != nil)
        #expect(built.model.name == Fixtures.modelPath)
    }

    @Test func explicitMaxContextPastTheModelsIsAnError() throws {
        let builder = EngineBuilder(try config { $0.maxContext = 100_000 })
        #expect(throws: EngineConfigError.maxContextPastModel(requested: 100_000, modelContext: 8192)) {
            try builder.makeKVStore(for: try model)
        }
        #expect(EngineConfigError.maxContextPastModel(requested: 100_000, modelContext: 8192).description
            == "--max-context 100000: the model's context length is 8192 tokens; use at most that")
    }

    @Test func defaultMaxContextIsLoweredToTheModelsSilently() throws {
        // A model context shorter than the default: a tiny dummy Llama with a context of 1024.
        let hp = LlamaHyperparameters(blockCount: 2, embeddingLength: 64, feedForwardLength: 96, headCount: 4,
                                      headCountKV: 2, headDim: 16, contextLength: 1024, vocabSize: 80,
                                      ropeFreqBase: 10000, rmsNormEpsilon: 1e-5, tiedEmbeddings: false)
        let model = try CPULlamaModel(weights: DummyWeights(hyperparameters: hp), matmul: .float32)
        let builder = EngineBuilder(try config())
        let kv = try builder.makeKVStore(for: model)
        #expect(kv.maxContext == 1024)
        #expect(builder.notes.isEmpty)
    }

    @Test func kvBudgetSmallerThanOneContextLowersItWithANote() throws {
        var logged: [String] = []
        let builder = EngineBuilder(try config { $0.kvBudgetBytes = 8 << 20 }, log: { logged.append($0) })
        let built = try builder.build()
        // 8 MiB of 64 KiB pages over 60 tensors: 2 pages a tensor, 170 tokens (the CLI test sees the same).
        #expect(built.engine.maxContext == 170)
        #expect(built.engine.kv.maxContext == 170)
        let note = "vattn: the KV budget (--kv-mib 8) holds at most 170 tokens for one request: max context lowered "
            + "from 2048 to 170 (raise --kv-mib for more)"
        #expect(built.notes == [note])
        #expect(logged == [note])
    }

    @Test func kvBudgetUnderSixteenTokensIsRefused() throws {
        // 4 KiB pages hold 5 tokens of one tensor; one page for each of the 60 tensors.
        let builder = EngineBuilder(try config {
            $0.kv = .vattention(layout: .perLayer, cpuPageSize: 4096)
            $0.kvBudgetBytes = 60 * 4096
        })
        #expect {
            try builder.makeKVStore(for: try model)
        } throws: { error in
            guard case EngineConfigError.kvBudgetTooSmall(let budget, let capacity, _) = error else { return false }
            return budget == 60 * 4096 && capacity == 5
                && error.localizedDescriptionText.hasPrefix("the KV budget (240.0 KiB) holds only 5 tokens for one request")
                && error.localizedDescriptionText.hasSuffix("at least 16 are needed: raise --kv-mib")
        }
        // Paged: one block of 8 tokens.
        let hp = try model.hyperparameters
        let paged = EngineBuilder(try config {
            $0.kv = .paged(blockSize: 8)
            $0.kvBudgetBytes = 8 * hp.headCountKV * hp.headDim * 4 * 2 * hp.blockCount
        })
        #expect {
            try paged.makeKVStore(for: try model)
        } throws: { error in
            guard case EngineConfigError.kvBudgetTooSmall(_, let capacity, let store) = error else { return false }
            return capacity == 8 && store.hasPrefix("paged")
        }
    }

    @Test func theConfigChoosesTheStore() throws {
        let paged = try EngineBuilder(try config { $0.kv = .paged(blockSize: 32) }).makeKVStore(for: try model)
        #expect(paged is PagedKVStore)
        #expect((paged as? PagedKVStore)?.blockSize == 32)
        let perLayer = try EngineBuilder(try config()).makeKVStore(for: try model)
        #expect((perLayer as? VAttentionKVStore)?.manager.spec.layout == .perLayer)  // the CPU's default
        #expect((perLayer as? VAttentionKVStore)?.manager.spec.pageSize == 64 << 10)
        let mega = try EngineBuilder(try config { $0.kv = .vattention(layout: .mega, cpuPageSize: 128 << 10) })
            .makeKVStore(for: try model)
        #expect((mega as? VAttentionKVStore)?.manager.spec.layout == .mega)
        #expect((mega as? VAttentionKVStore)?.manager.spec.pageSize == 128 << 10)
    }

    @Test func dummyWeightsTooLargeForTheCPUAreRefused() throws {
        let builder = EngineBuilder(EngineConfig(model: .dummy(shape: "llama-3-8b", seed: 0), backend: .cpu))
        #expect {
            try builder.makeCPUModel(try builder.loadModel())
        } throws: { error in
            guard case EngineConfigError.dummyWeightsTooLargeForCPU(let shape, let bytes, _) = error else { return false }
            return shape == "llama-3-8b" && bytes == DummyWeights.knownShape("llama-3-8b")!.parameterCount * 4
        }
    }

    @Test func backendCPUNeedsNoDriver() throws {
        #expect(try EngineBuilder(try config()).cudaDevice() == nil)
    }
}

extension Error {
    /// What `vattn` prints after "Error: ".
    var localizedDescriptionText: String { "\(self)" }
}
