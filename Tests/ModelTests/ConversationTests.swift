import Testing
@testable import Model

private let skipReason: Comment = "SmolLM2 GGUF not in the ModelStore cache (bash scripts/fixtures/fetch_model.sh); CI=1 makes this a failure"

/// `vattn chat`'s history: what the model is shown each turn, and what is forgotten when it no longer fits.
@Suite("Conversation (vattn chat's history) on SmolLM2's template", .enabled(if: Support.runModelTests, skipReason))
struct ConversationTests {
    let template: ChatTemplate
    let tokenizer: Tokenizer

    init() throws {
        template = try ChatTemplate(file: try Support.model())
        tokenizer = try Support.tok()
    }

    func count(_ c: Conversation, _ user: String) -> Int {
        tokenizer.encode(template.render(c.messages(adding: user), addGenerationPrompt: true), addSpecial: false,
                         parseSpecial: true).count
    }

    @Test("the second turn's prompt holds the first turn, in order, through the template")
    func secondTurn() throws {
        var c = Conversation(system: "Answer briefly.")
        let first = try c.prompt(for: "My name is Ada.", template: template, tokenizer: tokenizer, limit: 2048)
        #expect(first.droppedTurns == 0)
        #expect(first.text == "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nMy name is Ada.<|im_end|>\n"
                + "<|im_start|>assistant\n")
        c.append(user: "My name is Ada.", assistant: "Hello Ada!")
        let second = try c.prompt(for: "What is my name?", template: template, tokenizer: tokenizer, limit: 2048)
        #expect(second.text == "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nMy name is Ada.<|im_end|>\n"
                + "<|im_start|>assistant\nHello Ada!<|im_end|>\n<|im_start|>user\nWhat is my name?<|im_end|>\n"
                + "<|im_start|>assistant\n")
        // The tokens are the text's, control markers as single special tokens (not spelled out).
        #expect(second.tokens == tokenizer.encode(second.text, addSpecial: false, parseSpecial: true))
        #expect(second.tokens.count < second.text.utf8.count / 2)
        #expect(c.turns.count == 1)
    }

    @Test("without --system the model's default system prompt is used")
    func defaultSystem() throws {
        var c = Conversation()
        let p = try c.prompt(for: "Hi", template: template, tokenizer: tokenizer, limit: 2048)
        #expect(p.text.hasPrefix("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"))
    }

    @Test("when the history outgrows the limit the oldest whole turns go, the newest stay")
    func dropOldest() throws {
        var c = Conversation(system: "Be kind.")
        for i in 1...5 { c.append(user: "question \(i) " + String(repeating: "la ", count: 20), assistant: "answer \(i)") }
        let full = count(c, "last one")
        // Room for everything: nothing goes.
        var roomy = c
        #expect(try roomy.prompt(for: "last one", template: template, tokenizer: tokenizer, limit: full).droppedTurns == 0)
        #expect(roomy.turns.count == 5)
        // One token short: exactly the oldest turn goes.
        var tight = c
        let p = try tight.prompt(for: "last one", template: template, tokenizer: tokenizer, limit: full - 1)
        #expect(p.droppedTurns == 1)
        #expect(tight.turns.map(\.assistant) == ["answer 2", "answer 3", "answer 4", "answer 5"])
        #expect(!p.text.contains("question 1 ") && !p.text.contains("answer 1<"))
        #expect(p.text.contains("question 2 ") && p.text.contains("answer 5") && p.text.hasSuffix("last one<|im_end|>\n<|im_start|>assistant\n"))
        #expect(p.text.hasPrefix("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nquestion 2"))
        #expect(p.tokens.count <= full - 1)
        // Only the system prompt and the new message fit: the whole history goes.
        var bare = c
        let alone = Conversation(system: "Be kind.")
        let minimum = count(alone, "last one")
        let q = try bare.prompt(for: "last one", template: template, tokenizer: tokenizer, limit: minimum)
        #expect(q.droppedTurns == 5 && bare.turns.isEmpty)
        #expect(q.tokens.count == minimum)
    }

    @Test("a message that cannot fit even alone is refused and the history is kept")
    func tooLong() throws {
        var c = Conversation()
        c.append(user: "hello", assistant: "hi")
        let long = String(repeating: "word ", count: 300)
        #expect(throws: ConversationError.self) {
            try c.prompt(for: long, template: template, tokenizer: tokenizer, limit: 100)
        }
        #expect(c.turns == [Conversation.Turn(user: "hello", assistant: "hi")])
    }

    @Test("reset forgets the turns, keeps the system prompt")
    func reset() throws {
        var c = Conversation(system: "Be kind.")
        c.append(user: "My name is Ada.", assistant: "Hello Ada!")
        c.reset()
        let p = try c.prompt(for: "What is my name?", template: template, tokenizer: tokenizer, limit: 2048)
        #expect(!p.text.contains("Ada"))
        #expect(p.text.contains("Be kind."))
    }
}
