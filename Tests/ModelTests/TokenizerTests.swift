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
