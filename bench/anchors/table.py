#!/usr/bin/env python3
"""One side-by-side table of our kernels and the peers, from the JSON of one anchors run:
`vattn bench attention --json`, `vattn bench prefill --json` and bench/anchors/peers.py --json.

usage: table.py OURS_ATTENTION.json OURS_PREFILL.json PEERS.json [--md OUT.md]
No torch needed (runs anywhere)."""
import json
import sys

DECODE = [(1, 32768), (16, 8192), (64, 4096), (128, 2048), (256, 1024)]
PREFILL = ["causal 2K", "causal 8K", "causal 32K", "chunk 2K @30K"]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception as e:  # noqa: BLE001
        print(f"(cannot read {path}: {e})")
        return None


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    md_path = sys.argv[sys.argv.index("--md") + 1] if "--md" in sys.argv else None
    if md_path in args:
        args.remove(md_path)
    ours_dec, ours_pre, peers = (load(p) for p in args[:3])
    out = []
    copy = peers["env"]["copy_GBps"] if peers else (ours_dec or {}).get("copyGBps", float("nan"))
    if peers:
        e = peers["env"]
        out.append(f"Device: {e['device']} ({e['sms']} SMs); torch {e['torch']}, cuDNN {e['cudnn']}, "
                   f"FlashInfer {e['flashinfer']}")
    out.append(f"Copy bandwidth: torch 4 GiB copy {copy:.0f} GB/s"
               + (f"; our 1 GiB copy kernel {ours_dec['copyGBps']:.0f} GB/s" if ours_dec else "")
               + " (read + write counted). Fractions below are of the torch copy.")
    out.append("")

    # ---- decode
    out.append("Decode, bf16, 32 q / 8 kv heads, d=128: µs per call / fraction of copy bandwidth (K+V read once)")
    hdr = "| kernel | " + " | ".join(f"{b}×{c // 1024}K" for b, c in DECODE) + " |"
    out += [hdr, "|---|" + "---|" * len(DECODE)]
    rows = {}  # label -> {(b, c): us}

    def nbytes(b, c):
        return 2 * b * c * 8 * 128 * 2

    if ours_dec:
        for storage in dict.fromkeys(r["storage"] for r in ours_dec["results"]):
            for graph in (False, True):
                label = f"ours {storage}" + (", CUDA graph" if graph else ", plain launches")
                cells = {}
                for r in ours_dec["results"]:
                    if r["storage"] != storage:
                        continue
                    us = r.get("graphMicrosMedian") if graph else r["microsMedian"]
                    if us is not None:
                        cells[(r["batch"], r["context"])] = min(us, cells.get((r["batch"], r["context"]), 1e30))
                if cells:
                    rows[label] = cells
    peer_labels = []
    if peers:
        for r in peers["decode"]:
            label = r["kernel"]
            if label not in rows:
                peer_labels.append(label)
            rows.setdefault(label, {})[(r["batch"], r["context"])] = r["us"]
    for label, cells in rows.items():
        out.append(f"| {label} | " + " | ".join(
            f"{cells[s]:.1f} / {nbytes(*s) / (cells[s] * 1e-6) / 1e9 / copy:.2f}" if s in cells else "–"
            for s in DECODE) + " |")

    def best(labels, s):
        v = [(rows[l][s], l) for l in labels if l in rows and s in rows[l]]
        return min(v) if v else None

    ours_contig = [l for l in rows if l.startswith("ours contiguous") and "graph" in l]
    ours_plain = [l for l in rows if l.startswith("ours contiguous") and "plain" in l]
    ratio_cells, plain_cells, peer_cells, tax16, tax256 = [], [], [], [], []
    for s in DECODE:
        o, p = best(ours_contig, s), best(peer_labels, s)
        ratio_cells.append(f"{o[0] / p[0]:.2f}× ({o[1].replace('ours ', '').replace(', CUDA graph', '')})"
                           if o and p else "–")
        o2 = best(ours_plain, s)
        plain_cells.append(f"{o2[0] / p[0]:.2f}×" if o2 and p else "–")
        peer_cells.append(p[1].split(",")[0].replace("FlashInfer BatchDecode paged p16", "FI p16") if p else "–")
        base = rows.get("ours contiguous-perLayer, CUDA graph", {}).get(s)
        for tax, st in ((tax16, "paged-16"), (tax256, "paged-256")):
            v = rows.get(f"ours {st}, CUDA graph", {}).get(s)
            tax.append(f"{v / base:.2f}" if v and base else "–")
    out.append("| **ours best contiguous (graph) ÷ best peer** (<1 = we are faster) | " + " | ".join(ratio_cells) + " |")
    out.append("| ours best contiguous (plain launches) ÷ best peer | " + " | ".join(plain_cells) + " |")
    out.append("| best peer | " + " | ".join(peer_cells) + " |")
    out.append("| our paged tax: paged 16 ÷ contiguous perLayer (graph) | " + " | ".join(tax16) + " |")
    out.append("| our paged tax: paged 256 ÷ contiguous perLayer (graph) | " + " | ".join(tax256) + " |")
    fi = [l for l in peer_labels if l.startswith("FlashInfer")]
    sd = [l for l in peer_labels if l.startswith("SDPA")]
    fitax = []
    for s in DECODE:
        a, b = best(fi, s), best(sd, s)
        fitax.append(f"{a[0] / b[0]:.2f}" if a and b else "–")
    out.append("| peers' paged tax: best FlashInfer p16 ÷ best SDPA contiguous | " + " | ".join(fitax) + " |")
    out.append("")

    # ---- prefill
    out.append("Prefill, causal, batch 1: µs / TFLOP/s (ours: best config of the bench's list; peers: do_bench median)")
    out += ["| kernel | " + " | ".join(PREFILL) + " |", "|---|" + "---|" * len(PREFILL)]
    prow, pflops = {}, {}
    if ours_pre:
        for r in ours_pre["results"]:
            label = "ours " + r["kernel"].replace("vattn ", "contiguous ")
            cur = prow.setdefault(label, {})
            if r["case"] not in cur or r["median_us"] < cur[r["case"]]:
                cur[r["case"]] = r["median_us"]
            pflops[r["case"]] = r["flops"]
    ppeers = []
    if peers:
        for r in peers["prefill"]:
            ppeers.append(r["kernel"]) if r["kernel"] not in prow else None
            prow.setdefault(r["kernel"], {})[r["case"]] = r["us"]
            pflops.setdefault(r["case"], r["us"] * 1e-6 * r["tflops"] * 1e12)
    ppeers = list(dict.fromkeys(ppeers))
    for label, cells in prow.items():
        out.append(f"| {label} | " + " | ".join(
            f"{cells[c]:.0f} / {pflops[c] / (cells[c] * 1e-6) / 1e12:.0f}" if c in cells else "–"
            for c in PREFILL) + " |")

    def pbest(labels, c):
        v = [(prow[l][c], l) for l in labels if l in prow and c in prow[l]]
        return min(v) if v else None
    ours_c = [l for l in prow if l.startswith("ours contiguous")]
    cells, names, ptax, fitax = [], [], [], []
    for c in PREFILL:
        o, p = pbest(ours_c, c), pbest(ppeers, c)
        cells.append(f"{o[0] / p[0]:.2f}×" if o and p else "–")
        names.append(p[1].split(",")[0].replace(" (contiguous)", "") if p else "–")
        base, pg = prow.get("ours contiguous perLayer", {}).get(c), prow.get("ours paged 16", {}).get(c)
        ptax.append(f"{pg / base:.2f}" if base and pg else "–")
        a = prow.get("FlashInfer BatchPrefill paged p16", {}).get(c)
        b = prow.get("FlashInfer single_prefill (contiguous)", {}).get(c)
        fitax.append(f"{a / b:.2f}" if a and b else "–")
    out.append("| **ours best contiguous ÷ best peer** (<1 = we are faster) | " + " | ".join(cells) + " |")
    out.append("| best peer | " + " | ".join(names) + " |")
    out.append("| our paged tax: paged 16 ÷ contiguous perLayer | " + " | ".join(ptax) + " |")
    out.append("| FlashInfer's paged tax: BatchPrefill p16 ÷ single_prefill | " + " | ".join(fitax) + " |")
    if peers and peers.get("failures"):
        out += ["", "Peers that could not run:"]
        out += [f"- {f['kind']} {f['kernel']} {f['shape']}: {f['error']}" for f in peers["failures"]]
    errs = []
    if peers:
        for part in ("decode", "prefill"):
            v = [r["rel_err"] for r in peers[part] if r["rel_err"] == r["rel_err"]]
            bad = [f"{r['kernel']} {r.get('case', r.get('batch'))}" for r in peers[part]
                   if not (r["rel_err"] < 2e-2)]
            if v:
                errs.append(f"{part}: rel. err vs fp32 {min(v):.1e}–{max(v):.1e}"
                            + (f"; ABOVE 2e-2 or NaN: {bad}" if bad else ""))
    if errs:
        out += ["", "Peer outputs checked: " + "; ".join(errs)]
    text = "\n".join(out)
    if md_path:
        with open(md_path, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
