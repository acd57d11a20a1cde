import CVAttentionABI
import Foundation
import Testing
@testable import VAttention
import VAttentionC

/// The C ABI on hostile sizes (issue 14): every absurd spec or budget comes back as VATTN_E_INVALID with a message —
/// never a trap (Swift's overflow checks are SIGILL), a hang, or a manager promising memory the machine lacks.
@Suite("C ABI refuses absurd sizes")
struct CABITests {
    static let good = vattn_spec(layers: 3, kv_heads: 2, head_dim: 16, dtype: Int32(VATTN_DTYPE_FP16),
                                 layout: Int32(VATTN_LAYOUT_PER_LAYER), max_slots: 4, max_context: 512, page_size: 4096)

    /// vattn_create's code and message; destroys a manager that was (wrongly or rightly) made.
    func create(_ spec: vattn_spec, budget: Int64 = 64 * 4096, lookAhead: Int64 = 16) -> (Int32, String) {
        var s = spec
        var out: OpaquePointer?
        let code = VAttentionC.vattn_create(&s, Int32(VATTN_BACKEND_HOST), budget, 0, lookAhead, &out)
        if let out { VAttentionC.vattn_destroy(out) }
        return (code, code == 0 ? "" : String(cString: VAttentionC.vattn_last_error()!))
    }

    @Test func aGoodSpecIsAccepted() {
        #expect(create(Self.good).0 == Int32(VATTN_OK))
    }

    @Test("absurd head_dim, max_slots, max_context, kv_heads, layers, page size", arguments: [50, 62])
    func absurdSizes(exponent: Int) {
        let big = Int64(1) << Int64(exponent)
        var cases: [(String, vattn_spec)] = []
        var s = Self.good
        s.head_dim = big; cases.append(("head_dim", s)); s = Self.good
        s.max_slots = big; cases.append(("max_slots", s)); s = Self.good
        s.max_context = big; cases.append(("max_context", s)); s = Self.good
        s.kv_heads = big; cases.append(("kv_heads", s)); s = Self.good
        s.layers = big; s.layout = Int32(VATTN_LAYOUT_MEGA); cases.append(("layers (mega)", s)); s = Self.good
        s.page_size = big; cases.append(("page_size", s))
        for (what, spec) in cases {
            let (code, message) = create(spec)
            #expect(code == Int32(VATTN_E_INVALID), "\(what) = 2^\(exponent): \(message)")
            #expect(message.contains("exceeds") || message.contains("larger than"), "\(what): \(message)")
        }
    }

    @Test("budgets beyond the machine's memory (2^41 … 2^62) are refused at once", arguments: [41, 43, 45, 62])
    func absurdBudgets(exponent: Int) throws {
        let ram = try #require(HostMemoryBackend().physicalMemoryLimit)
        let budget = Int64(1) << Int64(exponent)
        try #require(Int(budget) > ram, "this machine has more than 2^\(exponent) bytes of memory")
        let (code, message) = create(Self.good, budget: budget)
        #expect(code == Int32(VATTN_E_INVALID), "\(message)")
        #expect(message.contains("physical memory"), "\(message)")
    }

    @Test func negativeBudgetAndLookAhead() {
        #expect(create(Self.good, budget: -1).0 == Int32(VATTN_E_INVALID))
        #expect(create(Self.good, budget: .min).0 == Int32(VATTN_E_INVALID))
        #expect(create(Self.good, lookAhead: 1 << 62).0 == Int32(VATTN_E_INVALID))
        #expect(create(Self.good, lookAhead: -1).0 == Int32(VATTN_E_INVALID))
    }
}
