import Foundation
import Testing
@testable import Model

private let needsModel = Support.runModelTests
private let skipReason: Comment = "SmolLM2 GGUF not in the ModelStore cache (bash scripts/fixtures/fetch_model.sh); CI=1 makes this a failure"

@Suite("Tokenizer (SmolLM2 vocabulary, oracle: llama.cpp)")
struct TokenizerTests {
    @Test("vocabulary and special ids", .enabled(if: needsModel, skipReason))
    func vocabulary() throws {
        let t = try Support.tok()
        #expect(t.vocabularySize == 49152)
        #expect(t.preTokenizer == .smollm)
        #expect(t.bosID == 1 && t.eosID == 2 && t.padID == 2 && t.unknownID == 0)
        #expect(t.addBOS == false)
        #expect(t.id(of: "<|im_start|>") == 1)
        #expect(t.id(of: "<|im_end|>") == 2)
        #expect(t.type(of: 2) == .control)
    }

    @Test("ids match the fixture (plain and parse_special)", .enabled(if: needsModel, skipReason))
    func idsMatchFixture() throws {
        let t = try Support.tok()
        let fx = try ModelFixture.get()
        #expect(fx.strings.count >= 30)
        for c in fx.strings {
            #expect(t.encode(c.text) == c.ids, "plain: \(c.text.debugDescription)")
            #expect(t.encode(c.text, parseSpecial: true) == c.ids_parse_special, "parse_special: \(c.text.debugDescription)")
        }
    }

    @Test("150 seeded random strings match llama.cpp and round-trip", .enabled(if: needsModel, skipReason))
    func randomStrings() throws {
        let t = try Support.tok()
        let cases = try ModelFixture.get().random_strings
        #expect(cases.count == 150)
        for c in cases {
            #expect(t.encode(c.text) == c.ids, "\(c.text.debugDescription)")
            #expect(t.decode(t.encode(c.text)) == c.text)
        }
    }

    @Test("decode(encode(s)) == s", .enabled(if: needsModel, skipReason))
    func roundTrip() throws {
        let t = try Support.tok()
        for c in try ModelFixture.get().strings {
            #expect(t.decode(t.encode(c.text)) == c.text)
            #expect(t.decode(t.encode(c.text, parseSpecial: true)) == c.text)
            // per-token pieces as llama.cpp renders them (lossy only where a token ends mid-character)
            let pieces = c.ids_parse_special.map { t.decode([$0]) }
            #expect(pieces == c.pieces, "\(c.text.debugDescription)")
        }
    }

    @Test("special tokens are only parsed when asked", .enabled(if: needsModel, skipReason))
    func specialTokens() throws {
        let t = try Support.tok()
        let s = "<|im_start|>user\nhi<|im_end|>"
        let ids = t.encode(s, parseSpecial: true)
        #expect(ids.first == 1 && ids.last == 2)
        #expect(!t.encode(s).contains(1))
        #expect(t.decode(ids, renderSpecial: false) == "user\nhi")
    }

    @Test("ChatML conversations: rendering and ids match jinja + llama.cpp", .enabled(if: needsModel, skipReason))
    func chat() throws {
        let f = try Support.model()
        let t = try Support.tok()
        let tmpl = try ChatTemplate(file: f)
        for c in try ModelFixture.get().chats {
            let msgs = c.messages.map { ChatMessage(role: $0.role, content: $0.content) }
            let rendered = tmpl.render(msgs, addGenerationPrompt: c.add_generation_prompt)
            #expect(rendered == c.rendered)
            #expect(t.encode(rendered, parseSpecial: true) == c.ids)
        }
    }

    @Test("streaming detokenizer holds back split UTF-8", .enabled(if: needsModel, skipReason))
    func streaming() throws {
        let t = try Support.tok()
        for text in ["Emoji: 😀 👍🏽 🇫🇷 👨‍👩‍👧‍👦 ❤️", "日本語のテキスト", "plain ascii", "Ångström 😀😀"] {
            let ids = t.encode(text)
            var d = StreamingDetokenizer(tokenizer: t)
            var out = ""
            var sawHoldBack = false
            for id in ids {
                let piece = d.push(id)
                if d.pendingByteCount > 0 { sawHoldBack = true }
                #expect(!piece.contains("\u{FFFD}"), "replacement char emitted for \(text)")
                out += piece
            }
            out += d.flush()
            #expect(out == text)
            if text.hasPrefix("Emoji") { #expect(sawHoldBack, "emoji should span byte tokens") }
        }
        // An emoji split into single-byte tokens by hand.
        var d = StreamingDetokenizer(tokenizer: t)
        let bytes = Array("😀".utf8)
        var out = ""
        for (i, b) in bytes.enumerated() {
            let id = try #require(t.id(of: ByteLevel.encode([b])))
            let piece = d.push(id)
            #expect(piece == (i == bytes.count - 1 ? "😀" : ""))
            out += piece
        }
        #expect(out == "😀")
        // An incomplete sequence at the end is flushed as U+FFFD.
        _ = d.push(try #require(t.id(of: ByteLevel.encode([0xF0]))))
        #expect(d.flush() == "\u{FFFD}")
    }
}

@Suite("Pre-tokenizer vs the original regexes")
struct PreTokenizerTests {
    @Test func splitsMatchRegexOracle() throws {
        for c in try ModelFixture.get().pretokenizer {
            #expect(PreTokenizerKind.gpt2.split(c.text) == c.gpt2, "gpt2: \(c.text.debugDescription)")
            #expect(PreTokenizerKind.llama3.split(c.text) == c.llama3, "llama3: \(c.text.debugDescription)")
            #expect(PreTokenizerKind.smollm.split(c.text) == c.smollm, "smollm: \(c.text.debugDescription)")
        }
    }

    @Test func kinds() {
        #expect(PreTokenizerKind(ggmlPre: "smollm") == .smollm)
        #expect(PreTokenizerKind(ggmlPre: "llama-bpe") == .llama3)
        #expect(PreTokenizerKind(ggmlPre: "gpt2") == .gpt2)
        #expect(PreTokenizerKind(ggmlPre: nil) == .gpt2)
        #expect(PreTokenizerKind(ggmlPre: "qwen2") == nil)
    }
}

@Suite("Chat templates")
struct ChatTemplateTests {
    @Test func recognition() throws {
        #expect(try ChatTemplate(template: "chatml") == .chatML(defaultSystemPrompt: nil))
        let llama3 = "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
        #expect(try ChatTemplate(template: llama3) == .llama3)
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(template: "{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}") }
    }

    @Test func llama3Rendering() throws {
        let s = ChatTemplate.llama3.render([.system("Be brief. "), .user(" Hi")], addGenerationPrompt: true)
        #expect(s == "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    }

    @Test func chatMLRendering() {
        let t = ChatTemplate.chatML(defaultSystemPrompt: "Default.")
        #expect(t.render([.user("Q")], addGenerationPrompt: true)
                == "<|im_start|>system\nDefault.<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
        #expect(t.render([.system("S"), .user("Q")], addGenerationPrompt: false)
                == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n")
    }
}

@Suite("BPE on a tiny synthetic vocabulary")
struct TinyBPETests {
    /// 256 byte tokens, then a few merged tokens and two control tokens.
    static func make(_ pre: PreTokenizerKind, extra: [String], merges: [String]) -> Tokenizer {
        var toks = ByteLevel.byteToScalar.map { String($0) }
        toks += extra
        toks += ["<s>", "</s>"]
        var types = [TokenType](repeating: .normal, count: toks.count)
        types[toks.count - 2] = .control
        types[toks.count - 1] = .control
        return Tokenizer(tokens: toks, types: types, merges: merges, preTokenizer: pre,
                         bos: TokenID(toks.count - 2), eos: TokenID(toks.count - 1), pad: nil, unknown: nil,
                         addBOS: pre == .llama3)
    }

    @Test func mergesByRankLeftmostFirst() {
        let t = Self.make(.gpt2, extra: ["ab", "bc", "abc", "aa"], merges: ["b c", "a b", "a bc", "a a"])
        // "abc": rank("b c")=0 < rank("a b")=1 → "a"+"bc" → rank("a bc")=2 → "abc"
        #expect(t.encode("abc") == [t.id(of: "abc")!])
        // "aaa": leftmost "a a" first → "aa","a"
        #expect(t.encode("aaa") == [t.id(of: "aa")!, t.id(of: "a")!])
        #expect(t.decode(t.encode("aaa abc")) == "aaa abc")
    }

    @Test func ignoreMergesForLlama3() {
        // "abc" is in the vocabulary but no merge path leads to it.
        let l3 = Self.make(.llama3, extra: ["ab", "abc"], merges: ["a b"])
        #expect(l3.encode("abc") == [l3.id(of: "abc")!])
        #expect(l3.encode("abc", addSpecial: true) == [l3.bosID!, l3.id(of: "abc")!])
        let g2 = Self.make(.gpt2, extra: ["ab", "abc"], merges: ["a b"])
        #expect(g2.encode("abc") == [g2.id(of: "ab")!, g2.id(of: "c")!])
        #expect(g2.encode("abc", addSpecial: true) == g2.encode("abc"))  // addBOS false
    }

    @Test func controlTokensOnlyWithParseSpecial() {
        let t = Self.make(.gpt2, extra: [], merges: [])
        let ids = t.encode("x<s>y", parseSpecial: true)
        #expect(ids == [t.id(of: "x")!, t.bosID!, t.id(of: "y")!])
        #expect(t.encode("x<s>y").count == 5)
        #expect(t.decode(ids, renderSpecial: false) == "xy")
        #expect(t.decode(ids) == "x<s>y")
    }

    @Test func unsupportedMetadata() throws {
        var w = GGUFWriter()
        w.kv("tokenizer.ggml.model", .string("llama"))
        #expect(throws: TokenizerError.unsupportedModel("llama")) { try Tokenizer(file: GGUFFile(bytes: w.bytes())) }
        var w2 = GGUFWriter()
        w2.kv("tokenizer.ggml.model", .string("gpt2"))
        w2.kv("tokenizer.ggml.pre", .string("qwen2"))
        #expect(throws: TokenizerError.unsupportedPreTokenizer("qwen2")) { try Tokenizer(file: GGUFFile(bytes: w2.bytes())) }
        var w3 = GGUFWriter()
        w3.kv("tokenizer.ggml.model", .string("gpt2"))
        #expect(throws: GGUFError.missingKey("tokenizer.ggml.tokens")) { try Tokenizer(file: GGUFFile(bytes: w3.bytes())) }
    }
}
