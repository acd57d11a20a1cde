import FoundationEssentials
@testable import Lab
import Support
import Testing

/// The benches' JSON results: the old rounding, null (not a missing key) for numbers that are not finite, the field
/// names the scripts read; and the SVG pictures drawn beside them.
@Suite("Bench results and pictures")
struct ResultsTests {
    @Test func roundedNumbersAndNulls() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        func text(_ v: some Encodable) throws -> String { String(decoding: try encoder.encode(v), as: UTF8.self) }
        let missing: Rounded? = nil
        #expect(try text([Rounded(12.345678), Rounded(2.5, 0), Rounded(.nan), Rounded(.infinity), missing.orNull])
            == "[12.346,3,null,null,null]")
        #expect(try text(Summary([1, 2, 3, 4])) == #"{"count":4,"max":4,"mean":2.5,"p50":2,"p99":4}"#)
        let decoded = try JSONDecoder().decode([Rounded].self, from: Data("[1.5,null]".utf8))
        #expect(decoded == [Rounded(1.5), Rounded(.nan)])
    }

    @Test func cpuBenchResultKeepsOneTopLevelKeyPerTest() throws {
        let result = CPUBench.Result(device: "cpu", tests: [
            "pp128": ["tokens_per_second": Rounded(100.12345)],
            "streams4": ["prompt_tokens_per_second": Rounded(1), "output_tokens_per_second": Rounded(2),
                         "total_tokens_per_second": Rounded(3)],
        ])
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let text = String(decoding: try encoder.encode(result), as: UTF8.self)
        #expect(text == #"{"device":"cpu","pp128":{"tokens_per_second":100.123},"streams4":{"output_tokens_per_second":2,"prompt_tokens_per_second":1,"total_tokens_per_second":3}}"#)
        let back = try JSONDecoder().decode(CPUBench.Result.self, from: Data(text.utf8))
        #expect(back.device == "cpu" && back.tests == result.tests)
    }

    @Test func serveResultWritesRateNullOffline() throws {
        let s = Summary([1])
        let offline: Rounded? = nil
        let r = ServeBench.Result(workload: "chat", requests: 2, rate: offline.orNull, kv: "vattention", slots: 16,
                                  tokenBudget: 256, seconds: Rounded(1), requestsPerSecond: Rounded(2),
                                  outputTokensPerSecond: Rounded(3), ttftMillis: s, tpotMillis: s,
                                  meanKVUsedBytes: Rounded(4, 0), meanKVMappedBytes: Rounded(5, 0), preemptions: 0,
                                  criticalMaps: 1, backgroundMaps: 2, kvStepMillis: Rounded(0.5))
        let text = String(decoding: try JSONEncoder().encode(r), as: UTF8.self)
        #expect(text.contains(#""rate":null"#))
        for key in ["requestsPerSecond", "outputTokensPerSecond", "ttftMillis", "tpotMillis", "kvStepMillis"] {
            #expect(text.contains("\"\(key)\":"), "\(key)")
        }
    }

    @Test func chartsOnALogXAxisStayInTheirBox() {
        let chart = SVGChart(title: "Prefill throughput", xLabel: "prompt tokens", yLabel: "tokens/s",
                             series: [.init(name: "vattention whole", points: [(2048, 10), (65536, 20)])], logX: true)
        let svg = SVGChart.document([chart])
        #expect(svg.hasPrefix("<svg") && svg.hasSuffix("</svg>\n"))
        #expect(!svg.contains("nan") && !svg.contains("inf"))
        // The two points at the two ends of the plot area (x from 60 to 750).
        #expect(svg.contains("points=\"60.0,"))
        #expect(svg.contains(" 750.0,"))
        #expect(svgPath("out/decode.json") == "out/decode.svg" && svgPath("x") == "x.svg")
    }
}

@Suite("The peers' figures printed beside the attention benches")
struct PeerAnchorTests {
    @Test("chosen by the GPU's name; none for a GPU without measured peers")
    func byDevice() {
        #expect(PeerAnchors.forDevice("cuda: NVIDIA H200, 132 SMs")?.decodeMicros["64x4096"] == 243.5)
        #expect(PeerAnchors.forDevice("cuda: NVIDIA H100 80GB HBM3")?.decodeMicros["64x4096"] == 350.6)
        #expect(PeerAnchors.forDevice("cuda: NVIDIA A100-SXM4-80GB") == nil)
        for anchors in [PeerAnchors.h200, PeerAnchors.h100] {
            #expect(Set(anchors.decodeMicros.keys) == ["1x32768", "16x8192", "64x4096", "128x2048", "256x1024"])
            #expect(Set(anchors.prefill.keys) == ["causal 2K", "causal 8K", "causal 32K", "chunk 2K @30K"])
        }
    }
}
