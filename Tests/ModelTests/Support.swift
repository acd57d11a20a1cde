import Foundation
import Testing
@testable import Model

/// Shared test helpers: fixture paths, and the real SmolLM2 file found through ModelStore.
enum Support {
    static let fixturesDir: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path

    static func fixture(_ name: String) -> String { fixturesDir + "/" + name }

    static let isCI: Bool = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty } ?? false

    /// Path of the real model if ModelStore has it.
    static let modelPath: String? = (try? ModelStore().locate(ModelStore.defaultModel)) ?? nil

    /// Tests that need the real model run when it is present, and always in CI (where its absence is a failure:
    /// CI pulls it first). Elsewhere they are skipped with the reason shown by the trait's comment.
    static let runModelTests: Bool = modelPath != nil || isCI

    /// The parsed real model file (parsed once per test process).
    static let modelFile: Result<GGUFFile, any Error> = Result {
        guard let p = modelPath else {
            throw ModelMissing()
        }
        return try GGUFFile(path: p)
    }

    static let tokenizer: Result<Tokenizer, any Error> = Result { try Tokenizer(file: modelFile.get()) }

    struct ModelMissing: Error, CustomStringConvertible {
        var description: String {
            "SmolLM2 model file not found in \(ModelStore().directory) (CI must fetch it first: "
                + "bash scripts/fixtures/fetch_model.sh)"
        }
    }

    static func model() throws -> GGUFFile { try modelFile.get() }
    static func tok() throws -> Tokenizer { try tokenizer.get() }
}

/// Fixture of the real model (tokenizer ids, chats, dequantized rows, pre-tokenizer splits).
struct ModelFixture: Decodable {
    struct StringCase: Decodable { let text: String; let ids: [Int32]; let ids_parse_special: [Int32]; let pieces: [String] }
    struct Message: Decodable { let role: String; let content: String }
    struct Chat: Decodable { let messages: [Message]; let add_generation_prompt: Bool; let rendered: String; let ids: [Int32] }
    struct Row: Decodable { let tensor: String; let type: String; let row: Int; let row_length: Int; let values: [Float] }
    struct Pre: Decodable { let text: String; let gpt2: [String]; let llama3: [String]; let smollm: [String] }
    let oracle: String
    struct RandomCase: Decodable { let text: String; let ids: [Int32] }
    let strings: [StringCase]
    let random_strings: [RandomCase]
    let chats: [Chat]
    let dequant: [Row]
    let pretokenizer: [Pre]

    static let loaded: Result<ModelFixture, any Error> = Result {
        let data = try Data(contentsOf: URL(fileURLWithPath: Support.fixture("smollm2_fixture.json")))
        return try JSONDecoder().decode(ModelFixture.self, from: data)
    }

    static func get() throws -> ModelFixture { try loaded.get() }
}

struct SyntheticFixture: Decodable {
    struct Tensor: Decodable { let name: String; let type: String; let rows: Int; let row_length: Int; let values: [[Float]] }
    let alignment: Int
    let tensors: [Tensor]

    static let loaded: Result<SyntheticFixture, any Error> = Result {
        let data = try Data(contentsOf: URL(fileURLWithPath: Support.fixture("synthetic.json")))
        return try JSONDecoder().decode(SyntheticFixture.self, from: data)
    }

    static func get() throws -> SyntheticFixture { try loaded.get() }
}

/// |a-b| <= rel * max(|a|,|b|) + abs
func close(_ a: Float, _ b: Float, rel: Float = 1e-6, abs: Float = 0) -> Bool {
    Swift.abs(a - b) <= rel * max(Swift.abs(a), Swift.abs(b)) + abs
}
