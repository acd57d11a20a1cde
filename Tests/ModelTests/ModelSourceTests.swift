import Model
import Testing

@Suite("Model sources and shapes")
struct ModelSourceTests {
    @Test func namesAndPathsResolveAsTheCLIReadsThem() {
        #expect(ModelSource(nameOrPath: "smollm2-135m") == .store("smollm2-135m"))
        #expect(ModelSource(nameOrPath: "/models/x.gguf") == .gguf(path: "/models/x.gguf"))
        #expect(ModelSource(nameOrPath: "/models/llama/config.json") == .huggingFace(path: "/models/llama/config.json"))
        #expect(ModelSource(nameOrPath: "/tmp") == .huggingFace(path: "/tmp"))  // a directory
        #expect(ModelSource(nameOrPath: "/tmp").name == "/tmp")
        #expect(ModelSource.dummy(shape: "yi-6b", seed: 3).name == "yi-6b")
    }

    @Test func dummyShapesLoadWithoutATokenizer() throws {
        let loaded = try ModelSource.dummy(shape: "smollm2-135m", seed: 5).load()
        #expect(loaded.tokenizer == nil && loaded.chatTemplateText == nil && loaded.name == "smollm2-135m")
        #expect((loaded.weights as? DummyWeights)?.seed == 5)
        #expect(try ModelSource.dummy(shape: "smollm2-135m", seed: 5).loadTokenizer() == nil)
    }

    /// Llama-3-8B has 8,030,261,248 parameters; SmolLM2-135M (tied embeddings) 134,515,008.
    @Test func parameterCountsOfKnownShapes() {
        #expect(DummyWeights.knownShape("llama-3-8b")!.parameterCount == 8_030_261_248)
        #expect(DummyWeights.knownShape("smollm2-135m")!.parameterCount == 134_515_008)
        let hp = DummyWeights.knownShape("llama-3-8b")!
        #expect(hp.projectionParametersPerLayer == 4096 * (4096 + 2 * 1024) + 4096 * 4096 + 3 * 4096 * 14336)
    }
}
