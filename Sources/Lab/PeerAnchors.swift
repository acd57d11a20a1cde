/// The peers' figures the attention benches print beside ours, per GPU, from docs/results/anchors.md (measured by
/// scripts/gpu/anchors.sh: bf16, 32 query / 8 KV heads, d 128). A bench on a GPU with no entry prints none rather
/// than another GPU's.
struct PeerAnchors {
    /// Best contiguous decode (SDPA cuDNN), µs per call, by "batch×context".
    let decodeMicros: [String: Double]
    /// Prefill TFLOP/s of the peers, by case name ("causal 8K", "chunk 2K @30K").
    let prefill: [String: String]
    /// Where the figures come from, for the table's caption.
    let source: String

    /// The entry for a device description (`BackendHandle.description`: the GPU's name is in it), if there is one.
    static func forDevice(_ description: String) -> PeerAnchors? {
        if description.contains("H200") { return h200 }
        if description.contains("H100") { return h100 }
        return nil
    }

    static let h200 = PeerAnchors(
        decodeMicros: ["1x32768": 38.2, "16x8192": 122.4, "64x4096": 243.5, "128x2048": 243.4, "256x1024": 245.6],
        prefill: ["causal 2K": "FA2 208 · FA3 418 · cuDNN 400", "causal 8K": "FA2 318 · FA3 582 · cuDNN 553",
                  "causal 32K": "FA2 348 · FA3 639 · cuDNN 592", "chunk 2K @30K": "FA2 344 · FA3 625 · cuDNN 310"],
        source: "H200, 2026-12-03, docs/results/anchors.md")

    static let h100 = PeerAnchors(
        decodeMicros: ["1x32768": 51.2, "16x8192": 175.3, "64x4096": 350.6, "128x2048": 353.2, "256x1024": 352.9],
        prefill: ["causal 2K": "FA2 206 · FA3 409 · cuDNN 397", "causal 8K": "FA2 319 · FA3 579 · cuDNN 555",
                  "causal 32K": "FA2 331 · FA3 648 · cuDNN 606", "chunk 2K @30K": "–"],
        source: "H100, 2026-11-22, docs/results/anchors.md")
}
