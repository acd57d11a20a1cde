#!/usr/bin/env python3
"""Peer attention kernels on the shapes of `vattn bench attention` and `vattn bench prefill`, timed the way
docs/results/anchors.md records how they were timed, in the same run as our benches (scripts/gpu/anchors.sh).

bf16, 32 query / 8 KV heads, d = 128.
Decode (one query token per sequence), batch x context 1x32K, 16x8K, 64x4K, 128x2K, 256x1K:
  - PyTorch SDPA, backends FLASH, CUDNN, EFFICIENT, enable_gqa=True, contiguous [B, H, L, D] tensors;
  - FlashInfer BatchDecodeWithPagedKVCacheWrapper, page 16 (shuffled pages, NHD), with and without tensor cores.
  Timing: `--graph-calls` back-to-back calls captured in one CUDA graph, alternating between two K/V sets (like our
  bench's two layers: every call reads K/V that the previous call did not); each replay timed with CUDA events;
  median per call over `--replays` replays. Bytes = K+V read once.
Prefill, batch 1: causal 2K, 8K, 32K, and a chunk of 2K queries at offset 30K (KV 32K; query i sees keys
  0..30720+i, i.e. causal aligned bottom-right):
  - SDPA FLASH / CUDNN / EFFICIENT (is_causal, or causal_lower_right for the chunk), enable_gqa=True;
  - FlashInfer single_prefill_with_kv_cache (causal) and BatchPrefillWithPagedKVCacheWrapper, page 16.
  Timing: triton.testing.do_bench median (it flushes L2 between calls).
Every output is compared with an fp32 reference on the same rounded inputs (decode: all rows; prefill: 576 sampled
query rows incl. the last 64): relative L2 error. A peer that cannot run is reported with its exact error.

usage: python3 bench/anchors/peers.py --json OUT.json --md OUT.md [--jit-only]
"""
import argparse
import json
import math
import statistics
import sys
import time
import traceback
import warnings

import torch
import torch.nn.functional as F

HQ, HKV, D = 32, 8, 128
G = HQ // HKV
DT = torch.bfloat16
SCALE = 1.0 / math.sqrt(D)
DECODE_SHAPES = [(1, 32768), (16, 8192), (64, 4096), (128, 2048), (256, 1024)]
PREFILL_CASES = [("causal 2K", 2048, 0), ("causal 8K", 8192, 0), ("causal 32K", 32768, 0),
                 ("chunk 2K @30K", 2048, 30720)]

results = {"decode": [], "prefill": [], "failures": []}


def log(*a):
    print(*a, flush=True)


def uniform(shape, amplitude, gen):
    return ((torch.rand(shape, generator=gen, device="cuda", dtype=torch.float32) * 2 - 1) * amplitude).to(DT)


def rel_err(out, ref):
    out = out.float()
    if not torch.isfinite(out).all():
        return float("nan")
    return ((out - ref).norm() / ref.norm()).item()


def fail(kind, kernel, shape, e, caught=()):
    msg = f"{type(e).__name__}: {e}".strip()
    # SDPA says why a backend refused only in warnings ("No available kernel" is all the exception says).
    reasons = [str(w.message) for w in caught if "sdp" in str(w.message).lower() or "kernel" in str(w.message).lower()]
    if reasons:
        msg += " | warnings: " + " | ".join(dict.fromkeys(reasons))
    short = " | ".join(line for line in msg.splitlines() if line.strip())[:600]
    results["failures"].append({"kind": kind, "kernel": kernel, "shape": shape, "error": short})
    log(f"  CANNOT RUN {kernel} {shape}: {short}")


# ---------------------------------------------------------------------------------------------------------------
def copy_bandwidth():
    n = 4 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    a.fill_(7)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(20):
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e))
    del a, b
    torch.cuda.empty_cache()
    return 2 * n / (statistics.median(ts) * 1e-3) / 1e9


def graph_time(fn, calls, replays):
    """fn(i) enqueues call i (i % 2 picks the K/V set). Median µs per call over replays of a graph of `calls` calls,
    the p10-p90 spread, and the output of the last call on set 0 (from a replay)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(4):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        outs = [fn(i) for i in range(calls)]
    g.replay()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(replays):
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1000 / calls)
    ts.sort()
    out = outs[calls - 1 if (calls - 1) % 2 == 0 else calls - 2].clone()  # the last call on K/V set 0
    del g, outs
    return ts[len(ts) // 2], ts[len(ts) * 9 // 10] - ts[len(ts) // 10], out


def decode_reference(q, k, v):
    """q [B, HQ, D]; k, v [B, L, HKV, D] → fp32 [B, HQ, D]."""
    B, L = k.shape[0], k.shape[1]
    qf = q.float().view(B, HKV, G, D)
    kf = k.float().permute(0, 2, 1, 3)  # [B, HKV, L, D]
    vf = v.float().permute(0, 2, 1, 3)
    s = torch.einsum("bhgd,bhld->bhgl", qf, kf) * SCALE
    p = torch.softmax(s, dim=-1)
    return torch.einsum("bhgl,bhld->bhgd", p, vf).reshape(B, HQ, D)


def run_decode(args, copy_gbps):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    try:
        import flashinfer
    except Exception as e:  # noqa: BLE001
        flashinfer = None
        fail("decode", "FlashInfer", "all", e)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1234)
    for B, L in DECODE_SHAPES:
        shape = f"{B}x{L}"
        log(f"decode {shape}")
        q = uniform((B, HQ, D), 2, gen)
        # Two K/V sets (NHD per sequence), as our bench alternates two layers.
        ks = [uniform((B, L, HKV, D), 1, gen) for _ in range(2)]
        vs = [uniform((B, L, HKV, D), 1, gen) for _ in range(2)]
        ref = decode_reference(q, ks[0], vs[0])
        nbytes = 2 * B * L * HKV * D * 2

        def record(kernel, us, spread, out, note=""):
            err = rel_err(out.view(B, HQ, D), ref)
            frac = nbytes / (us * 1e-6) / 1e9 / copy_gbps
            results["decode"].append({"kernel": kernel, "batch": B, "context": L, "us": round(us, 2),
                                      "spread_us": round(spread, 2), "fraction_of_copy": round(frac, 4),
                                      "rel_err": err, "note": note})
            log(f"  {kernel:44s} {us:8.1f} µs (p10-p90 {spread:.1f})  {frac:.3f} of copy  rel.err {err:.2e}")

        # SDPA on contiguous [B, H, L, D]; and cuDNN on the layout our virtual tensor has ([B, L, HKV, D] per layer,
        # NHD) through a strided [B, HKV, L, D] view: does the peer's speed depend on its head-major layout?
        qh = q.view(B, HQ, 1, D)
        kh = [k.permute(0, 2, 1, 3).contiguous() for k in ks]
        vh = [v.permute(0, 2, 1, 3).contiguous() for v in vs]
        kn = [k.transpose(1, 2) for k in ks]
        vn = [v.transpose(1, 2) for v in vs]
        cases = [(f"{name}, enable_gqa (contiguous)", backend, kh, vh)
                 for name, backend in (("SDPA FLASH", SDPBackend.FLASH_ATTENTION),
                                       ("SDPA CUDNN", SDPBackend.CUDNN_ATTENTION),
                                       ("SDPA EFFICIENT", SDPBackend.EFFICIENT_ATTENTION))]
        cases.append(("SDPA CUDNN, enable_gqa (NHD strided view, our cache layout)", SDPBackend.CUDNN_ATTENTION, kn, vn))
        for kernel, backend, keys, values in cases:
            caught = []
            try:
                with warnings.catch_warnings(record=True) as caught, sdpa_kernel(backend):
                    warnings.simplefilter("always")
                    def fn(i):
                        return F.scaled_dot_product_attention(qh, keys[i % 2], values[i % 2], enable_gqa=True)
                    fn(0)  # raises here if the backend refuses the shape
                    torch.cuda.synchronize()
                    us, spread, out = graph_time(fn, args.graph_calls, args.replays)
                record(kernel, us, spread, out)
            except Exception as e:  # noqa: BLE001
                fail("decode", kernel, shape, e, caught)
            torch.cuda.synchronize()
        del kh, vh, kn, vn
        torch.cuda.empty_cache()

        # FlashInfer paged decode, page 16, shuffled pages, separate K and V pools [pages, 16, HKV, D] (NHD).
        if flashinfer is not None:
            P = 16
            per = L // P
            pages = B * per
            pools = []
            for s in range(2):
                perm = torch.randperm(pages, generator=torch.Generator().manual_seed(s)).to("cuda", torch.int32)
                kc = torch.empty((pages, P, HKV, D), dtype=DT, device="cuda")
                vc = torch.empty_like(kc)
                kc[perm.long()] = ks[s].reshape(pages, P, HKV, D)
                vc[perm.long()] = vs[s].reshape(pages, P, HKV, D)
                pools.append((kc, vc, perm))
            indptr = (torch.arange(B + 1, dtype=torch.int32, device="cuda") * per)
            last = torch.full((B,), P, dtype=torch.int32, device="cuda")
            for tc in (True, False):
                kernel = f"FlashInfer BatchDecode paged p16, {'tensor cores' if tc else 'default'}"
                try:
                    wrappers = []
                    for s in range(2):
                        ws = torch.zeros(128 << 20, dtype=torch.uint8, device="cuda")
                        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
                            ws, "NHD", use_cuda_graph=True, use_tensor_cores=tc,
                            paged_kv_indptr_buffer=torch.empty(B + 1, dtype=torch.int32, device="cuda"),
                            paged_kv_indices_buffer=torch.empty(pages, dtype=torch.int32, device="cuda"),
                            paged_kv_last_page_len_buffer=torch.empty(B, dtype=torch.int32, device="cuda"))
                        w.plan(indptr, pools[s][2], last, HQ, HKV, D, P, q_data_type=DT, kv_data_type=DT,
                               sm_scale=SCALE)
                        wrappers.append(w)

                    def fn(i):
                        return wrappers[i % 2].run(q, (pools[i % 2][0], pools[i % 2][1]))
                    us, spread, out = graph_time(fn, args.graph_calls, args.replays)
                    record(kernel, us, spread, out)
                    del wrappers
                except Exception as e:  # noqa: BLE001
                    fail("decode", kernel, shape, e)
                torch.cuda.synchronize()
            del pools
        del q, ks, vs, ref
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------
def prefill_flops(n, offset):
    if offset == 0:
        return 4 * n * n * HQ * D / 2
    return 4 * HQ * D * (n * offset + n * (n + 1) / 2)


def prefill_reference(q, k, v, offset, rows):
    """q [n, HQ, D], k/v [Lk, HKV, D]; rows: query indices. fp32 [len(rows), HQ, D]."""
    qf = q[rows].float().view(len(rows), HKV, G, D)
    kf, vf = k.float(), v.float()
    s = torch.einsum("rhgd,lhd->rhgl", qf, kf) * SCALE
    pos = torch.arange(k.shape[0], device="cuda")
    allowed = pos.view(1, -1) <= (rows.view(-1, 1) + offset)
    s = s.masked_fill(~allowed.view(len(rows), 1, 1, -1), float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.einsum("rhgl,lhd->rhgd", p, vf).reshape(len(rows), HQ, D)


def run_prefill(args):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right
    from triton.testing import do_bench
    try:
        import flashinfer
    except Exception as e:  # noqa: BLE001
        flashinfer = None
        fail("prefill", "FlashInfer", "all", e)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(4321)
    Lmax = 32768
    kall = uniform((Lmax, HKV, D), 2, gen)
    vall = uniform((Lmax, HKV, D), 1, gen)
    qall = uniform((Lmax, HQ, D), 2, gen)
    for name, n, offset in PREFILL_CASES:
        log(f"prefill {name}")
        Lk = offset + n
        k, v = kall[:Lk], vall[:Lk]
        q = qall[Lmax - n:].contiguous()
        g = torch.Generator().manual_seed(n + offset)
        rows = torch.cat([torch.randperm(n - 64, generator=g)[:512], torch.arange(n - 64, n)]).sort().values
        rows = rows.to("cuda")
        ref = prefill_reference(q, k, v, offset, rows)
        flops = prefill_flops(n, offset)

        def record(kernel, us, out, note=""):
            err = rel_err(out.reshape(n, HQ, D)[rows], ref)
            tf = flops / (us * 1e-6) / 1e12
            results["prefill"].append({"kernel": kernel, "case": name, "n": n, "offset": offset, "us": round(us, 2),
                                       "tflops": round(tf, 1), "rel_err": err, "note": note})
            log(f"  {kernel:44s} {us:10.1f} µs  {tf:6.1f} TFLOP/s  rel.err {err:.2e}")

        qh = q.permute(1, 0, 2).unsqueeze(0).contiguous()       # [1, HQ, n, D]
        kh = k.permute(1, 0, 2).unsqueeze(0).contiguous()       # [1, HKV, Lk, D]
        vh = v.permute(1, 0, 2).unsqueeze(0).contiguous()
        for bname, backend in (("SDPA FLASH", SDPBackend.FLASH_ATTENTION), ("SDPA CUDNN", SDPBackend.CUDNN_ATTENTION),
                               ("SDPA EFFICIENT", SDPBackend.EFFICIENT_ATTENTION)):
            kernel = f"{bname}, enable_gqa (contiguous)"
            caught = []
            try:
                with warnings.catch_warnings(record=True) as caught, sdpa_kernel(backend):
                    warnings.simplefilter("always")
                    if offset == 0:
                        def fn():
                            return F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, enable_gqa=True)
                    else:
                        mask = causal_lower_right(n, Lk)

                        def fn():
                            return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, enable_gqa=True)
                    out = fn()
                    torch.cuda.synchronize()
                    us = do_bench(fn, warmup=25, rep=args.prefill_rep_ms, return_mode="median") * 1000
                record(kernel, us, out[0].permute(1, 0, 2))
            except Exception as e:  # noqa: BLE001
                fail("prefill", kernel, name, e, caught)
            torch.cuda.synchronize()
        del qh, kh, vh
        if flashinfer is not None:
            kernel = "FlashInfer single_prefill (contiguous)"
            try:
                def fn():
                    return flashinfer.single_prefill_with_kv_cache(q, k, v, causal=True, sm_scale=SCALE)
                out = fn()
                torch.cuda.synchronize()
                us = do_bench(fn, warmup=25, rep=args.prefill_rep_ms, return_mode="median") * 1000
                record(kernel, us, out)
            except Exception as e:  # noqa: BLE001
                fail("prefill", kernel, name, e)
            kernel = "FlashInfer BatchPrefill paged p16"
            try:
                P = 16
                pages = Lk // P
                perm = torch.randperm(pages, generator=torch.Generator().manual_seed(7)).to("cuda", torch.int32)
                kc = torch.empty((pages, P, HKV, D), dtype=DT, device="cuda")
                vc = torch.empty_like(kc)
                kc[perm.long()] = k.reshape(pages, P, HKV, D)
                vc[perm.long()] = v.reshape(pages, P, HKV, D)
                ws = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
                w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD")
                w.plan(torch.tensor([0, n], dtype=torch.int32, device="cuda"),
                       torch.tensor([0, pages], dtype=torch.int32, device="cuda"), perm,
                       torch.tensor([P], dtype=torch.int32, device="cuda"), HQ, HKV, D, P, causal=True,
                       sm_scale=SCALE, q_data_type=DT, kv_data_type=DT)

                def fn():
                    return w.run(q, (kc, vc))
                out = fn()
                torch.cuda.synchronize()
                us = do_bench(fn, warmup=25, rep=args.prefill_rep_ms, return_mode="median") * 1000
                record(kernel, us, out)
                del kc, vc, w, ws
            except Exception as e:  # noqa: BLE001
                fail("prefill", kernel, name, e)
            torch.cuda.synchronize()
        torch.cuda.empty_cache()


def jit_only():
    """Builds FlashInfer's JIT kernels for every call this script makes, on tiny shapes (run it in the background
    while other, untimed work runs)."""
    import flashinfer
    t0 = time.time()
    B, L, P = 2, 64, 16
    q = torch.randn(B, HQ, D, dtype=DT, device="cuda")
    kc = torch.randn(B * L // P, P, HKV, D, dtype=DT, device="cuda")
    vc = torch.randn_like(kc)
    indptr = torch.arange(B + 1, dtype=torch.int32, device="cuda") * (L // P)
    idx = torch.arange(B * L // P, dtype=torch.int32, device="cuda")
    last = torch.full((B,), P, dtype=torch.int32, device="cuda")
    for tc in (True, False):
        ws = torch.zeros(128 << 20, dtype=torch.uint8, device="cuda")
        w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            ws, "NHD", use_cuda_graph=True, use_tensor_cores=tc,
            paged_kv_indptr_buffer=torch.empty(B + 1, dtype=torch.int32, device="cuda"),
            paged_kv_indices_buffer=torch.empty(B * L // P, dtype=torch.int32, device="cuda"),
            paged_kv_last_page_len_buffer=torch.empty(B, dtype=torch.int32, device="cuda"))
        w.plan(indptr, idx, last, HQ, HKV, D, P, q_data_type=DT, kv_data_type=DT, sm_scale=SCALE)
        w.run(q, (kc, vc))
        log(f"jit: decode tc={tc} ready at {time.time() - t0:.0f} s")
    qp = torch.randn(L, HQ, D, dtype=DT, device="cuda")
    kp = torch.randn(L, HKV, D, dtype=DT, device="cuda")
    flashinfer.single_prefill_with_kv_cache(qp, kp, kp, causal=True, sm_scale=SCALE)
    log(f"jit: single_prefill ready at {time.time() - t0:.0f} s")
    ws = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD")
    w.plan(torch.tensor([0, L], dtype=torch.int32, device="cuda"),
           torch.tensor([0, L // P], dtype=torch.int32, device="cuda"),
           torch.arange(L // P, dtype=torch.int32, device="cuda"), torch.tensor([P], dtype=torch.int32, device="cuda"),
           HQ, HKV, D, P, causal=True, sm_scale=SCALE, q_data_type=DT, kv_data_type=DT)
    w.run(qp, (kc[: L // P], vc[: L // P]))
    torch.cuda.synchronize()
    log(f"jit: batch prefill ready at {time.time() - t0:.0f} s")


def markdown(env):
    lines = [f"# Peers — {env['device']}, torch {env['torch']}, cuDNN {env['cudnn']}, FlashInfer {env['flashinfer']}",
             "", f"Copy bandwidth (torch copy of 4 GiB, read + write): {env['copy_GBps']:.0f} GB/s", "",
             "## Decode: µs per call (CUDA graph, median) / fraction of copy / rel. error vs fp32", ""]
    shapes = [f"{b}x{c}" for b, c in DECODE_SHAPES]
    lines.append("| kernel | " + " | ".join(shapes) + " |")
    lines.append("|---|" + "---|" * len(shapes))
    kernels = list(dict.fromkeys(r["kernel"] for r in results["decode"]))
    for k in kernels:
        cells = []
        for b, c in DECODE_SHAPES:
            r = next((r for r in results["decode"] if r["kernel"] == k and r["batch"] == b and r["context"] == c), None)
            cells.append("–" if r is None else f"{r['us']:.1f} / {r['fraction_of_copy']:.2f} / {r['rel_err']:.1e}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "## Prefill: µs (do_bench median) / TFLOP/s / rel. error vs fp32", ""]
    cases = [c[0] for c in PREFILL_CASES]
    lines.append("| kernel | " + " | ".join(cases) + " |")
    lines.append("|---|" + "---|" * len(cases))
    for k in list(dict.fromkeys(r["kernel"] for r in results["prefill"])):
        cells = []
        for c in cases:
            r = next((r for r in results["prefill"] if r["kernel"] == k and r["case"] == c), None)
            cells.append("–" if r is None else f"{r['us']:.1f} / {r['tflops']:.0f} / {r['rel_err']:.1e}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    if results["failures"]:
        lines += ["", "## Could not run", ""]
        for f in results["failures"]:
            lines.append(f"- {f['kind']} {f['kernel']} {f['shape']}: `{f['error']}`")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--md")
    ap.add_argument("--jit-only", action="store_true")
    ap.add_argument("--graph-calls", type=int, default=20)
    ap.add_argument("--replays", type=int, default=30)
    ap.add_argument("--prefill-rep-ms", type=int, default=100)
    ap.add_argument("--skip", default="", help="comma separated: decode, prefill")
    args = ap.parse_args()
    if args.jit_only:
        jit_only()
        return
    try:
        import flashinfer
        fi_version = flashinfer.__version__
    except Exception as e:  # noqa: BLE001
        fi_version = f"not importable ({type(e).__name__}: {e})"
    torch.backends.cuda.matmul.allow_tf32 = False
    env = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(), "flashinfer": fi_version,
           "sms": torch.cuda.get_device_properties(0).multi_processor_count}
    env["copy_GBps"] = copy_bandwidth()
    log(f"peers — {env}")
    skip = set(args.skip.split(","))
    for part, fn in (("decode", lambda: run_decode(args, env["copy_GBps"])), ("prefill", lambda: run_prefill(args))):
        if part in skip:
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            fail(part, "(the whole part)", "-", e)
    doc = {"env": env, "graph_calls": args.graph_calls, "replays": args.replays, **results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    text = markdown(env)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    log(text)


if __name__ == "__main__":
    sys.exit(main())
