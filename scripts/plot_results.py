#!/usr/bin/env python3
"""Line charts (plain SVG, no dependencies) from `vattn bench decode|prompt` JSON: tokens/s vs batch size or prompt
length, one line per KV store (and chunking). Usage: scripts/plot_results.py FILE.json [...]; writes FILE.svg."""
import json, math, sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def chart(title, xlabel, ylabel, series, logx=False, w=760, h=300):
    pts = [p for _, s in series for p in s]
    tx = (lambda x: math.log2(x)) if logx else (lambda x: x)
    xs, ys = [tx(x) for x, _ in pts], [y for _, y in pts]
    x0, x1, y1 = min(xs), max(max(xs), min(xs) + 1e-9), max(ys) * 1.05
    L, R, T, B = 70, w - 150, 30, h - 45
    px = lambda x: L + (tx(x) - x0) / (x1 - x0) * (R - L)
    py = lambda y: B - y / y1 * (B - T)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
           f'<line x1="{L}" y1="{B}" x2="{R}" y2="{B}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{B}" stroke="black"/>',
           f'<text x="{(L + R) / 2}" y="{h - 8}" text-anchor="middle">{xlabel}</text>',
           f'<text x="14" y="{(T + B) / 2}" transform="rotate(-90 14 {(T + B) / 2})" text-anchor="middle">{ylabel}</text>']
    for x in sorted({x for x, _ in pts}):
        out.append(f'<text x="{px(x):.1f}" y="{B + 14}" text-anchor="middle">{x}</text>')
    for i in range(5):
        y = y1 * i / 4
        out.append(f'<text x="{L - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:,.0f}</text>')
        out.append(f'<line x1="{L}" y1="{py(y):.1f}" x2="{R}" y2="{py(y):.1f}" stroke="#eee"/>')
    for k, (name, s) in enumerate(series):
        c = COLORS[k % len(COLORS)]
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
            c, " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(s))))
        for x, y in s:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"/>')
        out.append(f'<text x="{R + 10}" y="{T + 16 * k + 10}" fill="{c}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)


for path in sys.argv[1:]:
    d = json.load(open(path))
    pts = d["points"]
    if "batch" in pts[0]:
        names = sorted({p["kv"] for p in pts})
        series = [(n, [(p["batch"], p["tokensPerSecond"]) for p in pts if p["kv"] == n]) for n in names]
        svg = chart(f'Decode throughput, {d["shape"]}, context {pts[0]["context"]} ({d["device"]})', "batch size",
                    "output tokens/s", series)
    else:
        keys = sorted({(p["kv"], p["chunk"]) for p in pts})
        series = [(f'{kv} {"whole" if c == 0 else f"{c} chunks"}',
                   [(p["length"], p["tokensPerSecond"]) for p in pts if (p["kv"], p["chunk"]) == (kv, c)])
                  for kv, c in keys]
        svg = chart(f'Prefill throughput, {d["shape"]} ({d["device"]})', "prompt tokens", "tokens/s", series, logx=True)
    out = path[:-5] + ".svg"
    open(out, "w").write(svg)
    print("wrote", out)
