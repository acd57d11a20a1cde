#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a model comes from: a name of the model cache, a GGUF file, an HF directory, or seeded random weights of a
/// shape. `load` turns it into weights, a tokenizer and a chat template.
public enum ModelSource: Sendable, Hashable, CustomStringConvertible {
    /// A short name of `ModelStore.known`, fetched into the cache on first use.
    case store(String)
    /// A GGUF file.
    case gguf(path: String)
    /// An HF model directory (config.json, model.safetensors or shards, tokenizer.json), or its config.json.
    case huggingFace(path: String)
    /// `DummyWeights` of a shape — a known shape name (`DummyWeights.knownShapes`), a config.json or an HF
    /// directory — with this seed. No tokenizer.
    case dummy(shape: String, seed: UInt64)

    /// A model named as `vattn --model` names one: an HF directory (or a path ending in config.json), a .gguf file,
    /// else a name of the model cache.
    public init(nameOrPath: String) {
        if nameOrPath.hasSuffix("config.json") || (!nameOrPath.hasSuffix(".gguf") && isDirectory(nameOrPath)) {
            self = .huggingFace(path: nameOrPath)
        } else if nameOrPath.hasSuffix(".gguf") {
            self = .gguf(path: nameOrPath)
        } else {
            self = .store(nameOrPath)
        }
    }

    /// The name or path as given.
    public var name: String {
        switch self {
        case .store(let s), .gguf(let s), .huggingFace(let s), .dummy(let s, _): s
        }
    }

    public var description: String { name }

    /// Opens the weights (pulling a cache name that is not downloaded yet) and, for real models, the tokenizer and
    /// chat template. `log` gets the notes: a fetch and its progress, a missing tokenizer.
    public func load(log: (String) -> Void = { _ in }) throws -> LoadedModel {
        switch self {
        case .dummy(let shape, let seed):
            let hp: LlamaHyperparameters
            if let known = DummyWeights.knownShape(shape) {
                hp = known
            } else {
                let path = shape.hasSuffix(".json") ? shape : shape + "/config.json"
                hp = try LlamaHyperparameters(huggingFaceConfig: MappedFile(path: path).json(), path: path)
            }
            return LoadedModel(weights: DummyWeights(hyperparameters: hp, seed: seed), tokenizer: nil,
                               chatTemplateText: nil, name: shape)
        case .huggingFace(let path):
            let hf = try SafetensorsModel(directory: path)
            // A checkpoint without a usable tokenizer still runs on token ids (bench serve).
            let tokenizer: Tokenizer?
            do { tokenizer = try hf.loadTokenizer() } catch {
                log("\(path): no tokenizer (\(error)); text commands will refuse this model")
                tokenizer = nil
            }
            return LoadedModel(weights: hf, tokenizer: tokenizer, chatTemplateText: hf.chatTemplateText(), name: path)
        case .gguf(let path):
            return try Self.openGGUF(path: path, name: name)
        case .store(let name):
            return try Self.openGGUF(path: try Self.cached(name, log: log), name: name)
        }
    }

    /// The tokenizer alone (nil for dummy weights), without opening the weights.
    public func loadTokenizer(log: (String) -> Void = { _ in }) throws -> Tokenizer? {
        switch self {
        case .dummy: nil
        case .huggingFace(let path): try SafetensorsModel(directory: path).loadTokenizer()
        case .gguf(let path): try Tokenizer(file: try GGUFFile(path: path))
        case .store(let name): try Tokenizer(file: try GGUFFile(path: try Self.cached(name, log: log)))
        }
    }

    private static func openGGUF(path: String, name: String) throws -> LoadedModel {
        let file = try GGUFFile(path: path)
        return LoadedModel(weights: try GGUFWeights(file: file), tokenizer: try Tokenizer(file: file),
                           chatTemplateText: file["tokenizer.chat_template"]?.stringValue, name: name)
    }

    /// The cached file of a known model, pulled first when it is not downloaded yet.
    private static func cached(_ name: String, log: (String) -> Void) throws -> String {
        let store = ModelStore()
        if let p = try store.locate(name) { return p }
        log("\(name) is not in \(ModelStore.defaultDirectory()) yet: fetching it")
        return try store.pull(name) { log("  " + $0) }
    }
}

/// What a `ModelSource` loaded.
public struct LoadedModel: Sendable {
    public let weights: any LlamaWeights
    /// nil for dummy weights (and HF directories without a usable tokenizer.json).
    public let tokenizer: Tokenizer?
    public let chatTemplateText: String?
    /// The source's name or path as given.
    public let name: String

    public init(weights: any LlamaWeights, tokenizer: Tokenizer?, chatTemplateText: String?, name: String) {
        self.weights = weights
        self.tokenizer = tokenizer
        self.chatTemplateText = chatTemplateText
        self.name = name
    }

    /// The chat template, or `ChatTemplateError.missing`.
    public func chatTemplate() throws -> ChatTemplate {
        guard let chatTemplateText else { throw ChatTemplateError.missing }
        return try ChatTemplate(template: chatTemplateText)
    }
}

private func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}
