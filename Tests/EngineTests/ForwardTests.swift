import Engine
import Foundation
import Model
import Testing

/// Our CPU forward pass against HF transformers (float32, on the H100; fixture made by
/// scripts/fixtures/make_forward_fixtures.py) on the same token ids.
@Suite("Llama forward on the CPU vs HF transformers", .enabled(if: Fixtures.runModelTests, Fixtures.skipReason))
struct ForwardTests {
    /// Logits of HF's top-5 tokens: |ours − HF| ≤ 0.05 (logits are ~10–35; float32 summation order differs), and
    /// the same arg-max.
    static let logitTolerance = 0.05

    @Test("prefill: last-position logits match, prompt by prompt")
    func prefillLogits() throws {
        let (_, model, _) = try Fixtures.loaded.get()
        let fixture = try Fixtures.forward()
        let kv = try Fixtures.vattentionStore(model)
        for (n, c) in fixture.cases.enumerated() {
            let slot = try kv.allocateSlot(expectedLength: c.prompt_ids.count)
            try kv.reserve([(slot, c.prompt_ids.count)])
            let logits = model.forward([SequenceChunk(slot: slot, start: 0, tokens: c.prompt_ids, wantsLogits: true)],
                                       kv: kv)[0]
            let top = c.top5.last!
            check(logits, top, "case \(n) position \(top.position)")
            try kv.free(slot)
        }
    }

    @Test("every integer path this CPU runs (and float32) matches HF on the first prompt",
          arguments: [CPUMatmul.float32] + CPUInstructionSet.allCases.filter(\.isSupported).map { .integer($0, .int16) })
    func everyMatmulPath(matmul: CPUMatmul) throws {
        let (file, _, _) = try Fixtures.loaded.get()
        let model = try CPULlamaModel(file: file, matmul: matmul)
        #expect(model.matmulInUse == matmul)
        let c = try Fixtures.forward().cases[0]
        let kv = try Fixtures.vattentionStore(model)
        let slot = try kv.allocateSlot(expectedLength: c.prompt_ids.count)
        try kv.reserve([(slot, c.prompt_ids.count)])
        let logits = model.forward([SequenceChunk(slot: slot, start: 0, tokens: c.prompt_ids, wantsLogits: true)], kv: kv)[0]
        check(logits, c.top5.last!, "\(matmul)")
    }

    @Test("chunked prefill then decode: every early position matches, greedy continuation matches")
    func decodeLogitsAndGreedy() throws {
        let (_, model, _) = try Fixtures.loaded.get()
        let fixture = try Fixtures.forward()
        let kv = try Fixtures.vattentionStore(model, layout: .mega)
        for (n, c) in fixture.cases.enumerated() {
            let slot = try kv.allocateSlot(expectedLength: c.prompt_ids.count + c.greedy.count)
            // Positions 0...3 as one chunk, then one token at a time (decode kernel) through the prompt.
            let first = min(4, c.prompt_ids.count)
            try kv.reserve([(slot, first)])
            var logits = model.forward([SequenceChunk(slot: slot, start: 0, tokens: Array(c.prompt_ids[0..<first]),
                                                      wantsLogits: true)], kv: kv)[0]
            var byPosition: [Int: [Float]] = [first - 1: logits]
            for p in first..<c.prompt_ids.count {
                try kv.reserve([(slot, p + 1)])
                logits = model.forward([SequenceChunk(slot: slot, start: p, tokens: [c.prompt_ids[p]], wantsLogits: true)],
                                       kv: kv)[0]
                byPosition[p] = logits
            }
            for top in c.top5 where byPosition[top.position] != nil {
                check(byPosition[top.position]!, top, "case \(n) position \(top.position)")
            }
            var generated: [Int32] = []
            var length = c.prompt_ids.count
            while generated.count < c.greedy.count {
                let next = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
                generated.append(next)
                if next == c.greedy.last && generated.count == c.greedy.count { break }
                try kv.reserve([(slot, length + 1)])
                logits = model.forward([SequenceChunk(slot: slot, start: length, tokens: [next], wantsLogits: true)],
                                       kv: kv)[0]
                length += 1
            }
            // Greedy text from fp32 references agrees for a while and may then split on a near-tie.
            let prefix = 16
            #expect(Array(generated.prefix(prefix)) == Array(c.greedy.prefix(prefix)), "case \(n): \(generated) vs \(c.greedy)")
            try kv.free(slot)
        }
    }

    func check(_ logits: [Float], _ top: Fixtures.ForwardCase.Top, _ what: String) {
        #expect(!logits.contains { $0.isNaN }, "\(what): NaN")
        let ours = logits.indices.max { logits[$0] < logits[$1] }!
        #expect(ours == top.ids[0], "\(what): arg-max \(ours) vs HF \(top.ids[0])")
        for (id, reference) in zip(top.ids, top.logits) {
            #expect(abs(Double(logits[id]) - reference) <= Self.logitTolerance,
                    "\(what): token \(id) logit \(logits[id]) vs HF \(reference)")
        }
    }
}
