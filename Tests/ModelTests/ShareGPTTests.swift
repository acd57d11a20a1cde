import Foundation
import Testing
@testable import Model

@Suite("JSON arrays read element by element, and cut-off files")
struct JSONArrayPrefixTests {
    func read(_ text: String) throws -> (values: [JSONValue], prefix: JSONValue.ArrayPrefix) {
        var values: [JSONValue] = []
        let bytes = Array(text.utf8)
        let prefix = try bytes.withUnsafeBytes { try JSONValue.forEachElement(ofArray: $0) { values.append($0) } }
        return (values, prefix)
    }

    @Test("a whole array: every element, no cut")
    func whole() throws {
        let (v, p) = try read(#" [ {"a": 1}, [2, 3], "x", 4 ] "#)
        #expect(v.count == 4 && p == .init(elements: 4, cutAt: nil))
        #expect(v[0]["a"]?.intValue == 1 && v[2].stringValue == "x")
        #expect(try read("[]").prefix == .init(elements: 0, cutAt: nil))
    }

    @Test("cut inside an element, after a comma, or before the bracket: the complete elements, and where it ends")
    func cut() throws {
        let full = #"[{"conversations": [{"from": "human", "value": "hi"}]}, {"conversations": [{"from": "gpt", "value": "a\u00e9b"}]}]"#
        let second = full.range(of: #", {"conversations": [{"from": "gpt""#)!.lowerBound
        let secondStart = full.utf8.distance(from: full.startIndex, to: second) + 2
        for end in (secondStart + 1)..<(full.utf8.count - 1) {  // every cut inside the second record
            let (v, p) = try read(String(full.utf8.prefix(end))!)
            #expect(v.count == 1 && p == .init(elements: 1, cutAt: secondStart), "cut at \(end): \(p)")
        }
        #expect(try read(#"[1, 2,"#).prefix == .init(elements: 2, cutAt: 6))
        #expect(try read(#"[1, 25"#).prefix == .init(elements: 1, cutAt: 4), "a number cut short may have been longer")
        #expect(try read(#"[{"a": 1}"#).prefix == .init(elements: 0, cutAt: 1), "no ',' or ']' after it yet")
        #expect(try read(#"[{"a": 1},"#).prefix == .init(elements: 1, cutAt: 10))
    }

    @Test("malformed data before the end is an error, not a cut")
    func malformed() {
        #expect(throws: JSONError.self) { try read(#"[{"a": 1}, {"a" 2}, {"b": 3}, {"c": 4}, {"d": 5}]"#) }
        #expect(throws: JSONError.self) { try read(#"{"not": "an array"}"#) }
    }
}

@Suite("ShareGPT: reading the cut-off file and vLLM's sampling")
struct ShareGPTTests {
    /// A small file in ShareGPT's shape, cut off mid-record like the packaged one.
    func writeFile(_ records: [[(String, String)]]) throws -> String {
        var parts: [String] = []
        for (i, turns) in records.enumerated() {
            let conv = turns.map { #"{"from": "\#($0.0)", "value": \#(jsonQuoted($0.1))}"# }.joined(separator: ", ")
            parts.append(#"{"id": "r\#(i)", "conversations": [\#(conv)]}"#)
        }
        let text = "[" + parts.joined(separator: ", ") + #", {"id": "cut", "conversations": [{"from": "human", "val"#
        let path = NSTemporaryDirectory() + "sharegpt-\(getpid())-\(records.count).json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func jsonQuoted(_ s: String) -> String {
        String(data: try! JSONSerialization.data(withJSONObject: [s]), encoding: .utf8)!.dropFirst().dropLast().description
    }

    @Test("complete records before the cut; the first human turn and its reply; records without one are skipped")
    func reads() throws {
        let path = try writeFile([
            [("human", "What is a page?"), ("gpt", "A unit of memory.")],
            [("gpt", "I start."), ("human", "Then me."), ("gpt", "Then me again.")],
            [("human", "Alone.")],
        ])
        let d = try ShareGPTDataset(path: path)
        #expect(d.records == 3 && d.cutAt != nil)
        #expect(d.exchanges.map(\.prompt) == ["What is a page?", "Then me."])
        #expect(d.exchanges.map(\.reply) == ["A unit of memory.", "Then me again."])
    }

    @Test("sampling: seeded and repeatable, token ids = the tokenizer's, vLLM's length limits applied",
          .enabled(if: Support.runModelTests, "SmolLM2 GGUF not in the model cache (scripts/fixtures/fetch_model.sh)"))
    func samples() throws {
        let t = try Support.tok()
        let long = String(repeating: "memory pages and kernels ", count: 300)  // > 1024 tokens
        var records: [[(String, String)]] = []
        for i in 0..<40 { records.append([("human", "Question number \(i) about virtual memory?"), ("gpt", "Answer \(i): " + String(repeating: "yes ", count: i + 3))]) }
        records.append([("human", "Hi"), ("gpt", "A reply that is long enough.")])  // prompt < 4 tokens
        records.append([("human", long), ("gpt", "Fine answer here.")])  // prompt > 1024
        records.append([("human", "A normal enough question?"), ("gpt", "Ok")])  // output < 4 tokens
        let d = try ShareGPTDataset(path: try writeFile(records))
        let (a, examined) = d.sample(count: 1000, seed: 3, tokenizer: t)
        #expect(examined == 43)
        #expect(a.count == 40, "the three out-of-limit exchanges are dropped")
        for r in a {
            #expect(r.prompt.count >= 4 && r.prompt.count <= 1024 && r.outputLength >= 4)
        }
        let prompts = Set(d.exchanges.prefix(40).map { t.encode($0.prompt, addSpecial: true) })
        #expect(Set(a.map(\.prompt)) == prompts)
        let again = d.sample(count: 10, seed: 3, tokenizer: t).requests
        #expect(again == Array(a.prefix(10)), "same seed, same order")
        #expect(d.sample(count: 10, seed: 4, tokenizer: t).requests != again)
        var tight = ShareGPTDataset.Limits()
        tight.maxTotal = 20
        #expect(d.sample(count: 100, seed: 3, tokenizer: t, limits: tight).requests.allSatisfy { $0.prompt.count + $0.outputLength <= 20 })
    }
}
