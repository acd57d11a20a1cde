import Foundation
import Testing
@testable import Model

@Suite("Tokenizer from HF tokenizer.json")
struct HFTokenizerTests {
    static func json(_ object: Any) throws -> JSONValue {
        try JSONValue.parse(Array(JSONSerialization.data(withJSONObject: object)))
    }

    static var byteLevel: [String: Any] { ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true] }

    @Test("a tiny BPE: merges as strings or pairs, added tokens as specials, BOS/EOS from tokenizer_config.json")
    func tiny() throws {
        let vocab = ["h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "he": 5, "ll": 6, "hell": 7, "hello": 8, "Ġhello": 9]
        let pairs = [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"], ["Ġ", "hello"]]
        for merges in [pairs.map { $0.joined(separator: " ") } as [Any], pairs as [Any]] {
            let tj = try Self.json([
                "model": ["type": "BPE", "vocab": vocab, "merges": merges],
                "added_tokens": [["id": 10, "content": "<|end|>", "special": true], ["id": 11, "content": "<x>", "special": false]],
                "pre_tokenizer": Self.byteLevel, "normalizer": NSNull(),
            ])
            let t = try Tokenizer(tokenizerJSON: tj, tokenizerConfig: Self.json(["eos_token": "<|end|>",
                                                                                  "bos_token": ["content": "<|end|>"]]))
            #expect(t.vocabularySize == 12 && t.preTokenizer == .gpt2)
            #expect(t.encode("hello hello") == [8, 9])
            #expect(t.encode("hello<|end|>", parseSpecial: true) == [8, 10])
            #expect(t.encode("hello<x>") == [8, 11], "user-defined tokens are always recognised")
            #expect(t.type(of: 10) == .control && t.type(of: 11) == .userDefined && t.type(of: 8) == .normal)
            #expect(t.eosID == 10 && t.bosID == 10 && !t.addBOS)
            #expect(t.decode([8, 9]) == "hello hello")
        }
    }

    @Test("unsupported model types, pre-tokenizers, normalizers, malformed merges: errors naming the field")
    func errors() throws {
        let model: [String: Any] = ["type": "BPE", "vocab": ["a": 0], "merges": [String]()]
        let cases: [([String: Any], String)] = [
            (["model": ["type": "WordPiece", "vocab": ["a": 0]], "pre_tokenizer": Self.byteLevel], "model.type"),
            (["model": model, "pre_tokenizer": ["type": "Whitespace"]], "pre_tokenizer"),
            (["model": model, "pre_tokenizer": Self.byteLevel, "normalizer": ["type": "NFC"]], "normalizer"),
            (["model": ["type": "BPE", "vocab": ["a": 0], "merges": [["a"]]], "pre_tokenizer": Self.byteLevel], "model.merges[0]"),
            (["model": ["type": "BPE", "vocab": ["a": "x"], "merges": [String]()], "pre_tokenizer": Self.byteLevel], "model.vocab.a"),
        ]
        for (object, field) in cases {
            let e = #expect(throws: ModelFileError.self) { try Tokenizer(tokenizerJSON: Self.json(object)) }
            #expect(e?.field == field, "\(String(describing: e))")
        }
        let e = #expect(throws: ModelFileError.self) { try Tokenizer(huggingFaceDirectory: "/nonexistent") }
        #expect(e?.reason.contains("no HF tokenizer") == true)
    }

    @Test("SmolLM2's vocabulary written as tokenizer.json encodes the fixture like the GGUF tokenizer",
          .enabled(if: Support.runModelTests))
    func smolLM2() throws {
        let gguf = try Support.tok()
        let file = try Support.model()
        let merges = try file.stringArray("tokenizer.ggml.merges")
        var vocab: [String: Int] = [:]
        var added: [[String: Any]] = []
        for (i, text) in gguf.tokens.enumerated() {
            vocab[text] = i
            let type = gguf.type(of: TokenID(i))
            if type != .normal { added.append(["id": i, "content": text, "special": type == .control]) }
        }
        let pre: [String: Any] = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], Self.byteLevel]]
        let config = try Self.json(["bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"])
        let fixture = try ModelFixture.get()
        // Merges in both spellings tokenizer.json uses.
        for mergeList in [merges as [Any], merges.map { $0.split(separator: " ", maxSplits: 1).map(String.init) } as [Any]] {
            let tj = try Self.json(["model": ["type": "BPE", "vocab": vocab, "merges": mergeList, "unk_token": "<|endoftext|>"],
                                    "added_tokens": added, "pre_tokenizer": pre, "normalizer": NSNull()])
            let t = try Tokenizer(tokenizerJSON: tj, tokenizerConfig: config)
            #expect(t.tokens == gguf.tokens && t.tokenTypes == gguf.tokenTypes && t.preTokenizer == .smollm)
            #expect(t.bosID == gguf.bosID && t.eosID == gguf.eosID && t.padID == gguf.padID && t.unknownID == gguf.unknownID)
            #expect(t.addBOS == gguf.addBOS)
            for c in fixture.strings {
                #expect(t.encode(c.text) == c.ids, "\(c.text.debugDescription)")
                #expect(t.encode(c.text, parseSpecial: true) == c.ids_parse_special)
            }
        }
    }
}
