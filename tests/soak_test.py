"""Soak: a few hundred mixed requests against a live `vattn serve` on 127.0.0.1, then leak checks.

The workload (seeded, so a failure repeats): chat and completions, streaming and not, prompts of random length,
max_tokens 1-16, random sampling parameters, about one request in six abandoned by its client (the socket is closed
mid-stream, while waiting for a whole answer, or right after sending), a few invalid requests, all from 16 client
threads at once against 12 slots and a KV pool small enough that requests wait for memory and get preempted.

What is asserted afterwards, and why that is the right invariant:
  * every accepted request was answered correctly (200, usage consistent, finish_reason right) and none got 429/5xx;
  * quiescence — running, waiting, open streams and the engine's request bookkeeping are all 0, every KV slot is
    free and KV bytes in use are 0: a request that leaked its slot or its bookkeeping shows up here;
  * KV mapped bytes ≤ the pool's capacity. Mapped is *not* expected to return to its value after warm-up: with
    deferred reclamation a finished request's pages stay mapped to its idle slot for the next request (that is the
    design), so after a soak that used every slot more pages are mapped than after a warm-up that used a few. What
    must hold is that those pages are still reclaimable, so:
  * a long request that needs more pages than the pool has free (it forces reclamation from idle slots) is served,
    and it and a short request produce exactly the greedy text they produced before the soak (pages reused by many
    requests hold no stale state that changes results);
  * heap growth: the process's anonymous resident memory (RssAnon: malloc'd memory, excluding the model file's
    page cache and the KV pool's shared-memory pages, which are bounded by --kv-mib) grows by at most 64 MiB from
    warm-up to the end, and by at most 24 MiB over the second half (a steady leak shows in both halves);
  * total resident memory (VmRSS) ≤ its warm-up value + the KV pool + 64 MiB;
  * the server still answers, and SIGTERM stops it cleanly (exit status 0).
Figures (requests, disconnects, preemptions, RSS, duration) are printed: run with -s to see them.

Environment (all optional; unset, the soak runs as CI runs it: on the CPU, vAttention per layer, 16 KiB pages, a
32 MiB pool, 300 requests): VATTN_BIN; VATTN_SERVE_ARGS, extra flags appended to the `vattn serve` command line
(split like a shell does, e.g. "--backend cuda --kv paged"; --backend, --kv and --layout there also decide what the
long request is expected to need); VATTN_EXPECT_GPU=1 with --backend auto (or none) means the server runs on the GPU;
SOAK_REQUESTS; SOAK_KV_MIB, the pool (--kv-mib, default 32; see KV_MIB below for GPU values); VATTN_START_TIMEOUT,
seconds to wait for /health (default 60).
"""

import concurrent.futures
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time

import httpx
import pytest

from vattn_server import free_port, proc_status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("VATTN_BIN", os.path.join(ROOT, ".build", "debug", "vattn"))
MODEL = "smollm2-135m"
REQUESTS = int(os.environ.get("SOAK_REQUESTS", "300"))
CONCURRENCY = 16
MiB = 1 << 20
SERVE_ARGS = shlex.split(os.environ.get("VATTN_SERVE_ARGS", ""))
START_TIMEOUT = float(os.environ.get("VATTN_START_TIMEOUT", "60"))


def serve_arg(name: str, default: str) -> str:
    """The value VATTN_SERVE_ARGS gives `name` (the last one wins, as on the command line), else `default`."""
    value = default
    for i, a in enumerate(SERVE_ARGS):
        if a == name and i + 1 < len(SERVE_ARGS):
            value = SERVE_ARGS[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


BACKEND = serve_arg("--backend", "auto")
GPU = BACKEND == "cuda" or (BACKEND == "auto" and os.environ.get("VATTN_EXPECT_GPU") == "1")
KV = serve_arg("--kv", "vattention")
LAYOUT = serve_arg("--layout", "mega" if GPU else "perLayer")  # the server's defaults
# SmolLM2-135M: 30 layers, 3 KV heads of 64; K/V in fp32 on the CPU, bf16 on the GPU.
LAYERS, KV_HEADS, HEAD_DIM, DTYPE_BYTES = 30, 3, 64, (2 if GPU else 4)
# The pool must be smaller than slots × context (here 12 × 512 tokens) so requests wait for memory and get preempted.
# CPU (per layer, fp32, 16 KiB pages): 60 tensors × 768 B per token, 21 tokens a page; a short request (≤ ~56
# tokens) maps 60–180 pages (1–2.8 MiB), 12 of them up to ~34 MiB, one slot at full context 22.5 MiB, all 12 slots
# 270 MiB: 32 MiB fits about the 12 short requests, and a long one (up to ~250 tokens, 11 MiB) makes others wait.
# GPU pages are the device's 2 MB (--page-kib does not apply there). Mega layout, bf16: 2 tensors (K, V) × 30 layers
# × 3 heads × 64 × 2 B = 11,520 B per token per tensor, so a K page and a V page (4 MiB) hold 182 tokens (~91 tokens
# per 2 MB of pool); every request maps at least those two pages, a full slot 2 × 3 pages (12 MiB), 12 slots 144 MiB.
# The default 32 MiB (16 pages) would run at most 8 of the 12 slots even with short requests; serve-check.sh passes
# SOAK_KV_MIB=48 (24 pages): exactly the 12 short requests, so any long request (250 tokens: 4 pages, 400: 6) makes
# others wait or preempts a request growing past its first 182 tokens. Per layer on the GPU a request maps at least
# 60 pages (a 2 MB page holds 5,461 tokens of one layer's K or V), 120 MiB: e.g. 480 MiB runs 4 at once. Paged
# (blocks of 16 tokens of all layers, K and V: 16 × 23,040 B = 360 KiB a block, freed when its request finishes):
# serve-check.sh passes 16 MiB (45 blocks, 720 tokens): 12 short requests take 24–48 blocks, the long request 26.
KV_MIB = int(os.environ.get("SOAK_KV_MIB", "32"))
SLOTS, CONTEXT, PAGE_KIB = 12, 512, 16
PAGE_BYTES = 2 * MiB if GPU else PAGE_KIB * 1024
LONG_TOKENS = 400  # the long request's prompt, roughly (380 words)


def long_request_bytes():
    """What vAttention maps for the long request, at least (None for paged, whose blocks are freed at once, so there
    is nothing to reclaim): every tensor's pages for LONG_TOKENS tokens, rounded down (so at least one page each)."""
    if KV == "paged":
        return None
    tensors, layers_per_tensor = (2 * LAYERS, 1) if LAYOUT == "perLayer" else (2, LAYERS)
    token_bytes = layers_per_tensor * KV_HEADS * HEAD_DIM * DTYPE_BYTES
    return tensors * max(1, LONG_TOKENS * token_bytes // PAGE_BYTES) * PAGE_BYTES

WORDS = ("the cat sat on a mat while seven quiet engines hummed under old bridges near rivers of light and every "
         "student wrote long letters about memory pages kernels tokens caches and distant mountains").split()


def metrics(base: str) -> dict:
    """Unlabelled samples by name, plus "http_<status>": responses by HTTP status over both endpoints."""
    text = httpx.get(base + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+) ([0-9.e+]+)", line)
        if m:
            out[m.group(1)] = float(m.group(2))
        m = re.fullmatch(r'vattn_http_requests_total\{endpoint="\w+",status="(\d+)"\} ([0-9.e+]+)', line)
        if m:
            key = "http_" + m.group(1)
            out[key] = out.get(key, 0) + float(m.group(2))
    return out


@pytest.fixture(scope="module")
def server():
    if not os.path.exists(BIN):
        pytest.fail(f"{BIN} not built (swift build --product vattn)")
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block the server's logging
    page_args = [] if GPU else ["--page-kib", str(PAGE_KIB)]  # the GPU's pages are the device's
    proc = subprocess.Popen(
        [BIN, "serve", "--host", "127.0.0.1", "--port", str(port), "--slots", str(SLOTS), "--max-context", str(CONTEXT),
         "--kv-mib", str(KV_MIB), *page_args, "--max-waiting", "64", "--log-level", "warning", *SERVE_ARGS],
        stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + START_TIMEOUT
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail("vattn serve did not start: " + log.read())
        time.sleep(0.2)
    yield base, proc
    if proc.poll() is None:
        proc.kill()


class Outcome:
    def __init__(self):
        self.kinds = {}
        self.errors = []

    def add(self, kind):
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


def make_request(rng: random.Random, i: int) -> dict:
    """One random request: its endpoint, body, and what its client does."""
    # Mostly short prompts, sometimes long ones (long prefills share steps with decodes).
    words = rng.randint(1, 12) if rng.random() < 0.94 else rng.randint(40, 200)
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    max_tokens = rng.randint(1, 16)
    stream = rng.random() < 0.5
    body = {"model": MODEL, "max_tokens": max_tokens, "stream": stream, "temperature": rng.choice([0, 0.7, 1.0]),
            "seed": i}
    if rng.random() < 0.3:
        body["top_k"] = rng.choice([-1, 0, 1, 5, 40])
    if rng.random() < 0.3:
        body["top_p"] = rng.choice([0.5, 0.9, 1.0])
    if stream and rng.random() < 0.5:
        body["stream_options"] = {"include_usage": True}
    if rng.random() < 0.5:
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    else:
        path = "/v1/completions"
        body["prompt"] = text
    r = rng.random()
    if r < 0.04:
        action = "invalid"
        body[rng.choice(["max_tokens", "top_k", "temperature"])] = rng.choice([-5, "x", 99.5])
    elif r < 0.10 and stream:
        action = "drop_mid_stream"
        body["max_tokens"] = max(max_tokens, 8)
    elif r < 0.14:
        action = "drop_while_waiting"
    elif r < 0.17:
        action = "drop_at_once"
    else:
        action = "complete"
    return {"path": path, "body": body, "action": action, "delay": rng.uniform(0.05, 1.5)}


def raw_request(base: str, path: str, body: dict) -> socket.socket:
    port = int(base.rsplit(":", 1)[1])
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def run_one(base: str, client: httpx.Client, req: dict, out: Outcome):
    path, body, action = req["path"], req["body"], req["action"]
    if action == "invalid":
        r = client.post(base + path, json=body)
        if r.status_code != 400 or "error" not in r.json():
            out.errors.append(f"invalid request answered {r.status_code}: {r.text[:200]}")
        out.add("invalid")
        return
    if action.startswith("drop"):
        s = raw_request(base, path, body)
        try:
            if action == "drop_mid_stream":
                got = b""
                while got.count(b"data: ") < 2:  # the role chunk or the first text, then go away
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            elif action == "drop_while_waiting":
                time.sleep(req["delay"])
        finally:
            s.close()
        out.add(action)
        return
    max_tokens = body["max_tokens"]
    if body["stream"]:
        text, finishes, usage, done = "", [], None, False
        with client.stream("POST", base + path, json=body) as r:
            if r.status_code != 200:
                out.errors.append(f"stream answered {r.status_code}: {r.read()[:200]}")
                return
            for line in r.iter_lines():
                if not line:
                    continue
                if not line.startswith("data: "):
                    out.errors.append(f"bad SSE line {line!r}")
                    return
                payload = line[6:]
                if payload == "[DONE]":
                    done = True
                    continue
                event = json.loads(payload)
                for c in event["choices"]:
                    text += (c.get("delta") or {}).get("content") or c.get("text") or ""
                    if c.get("finish_reason"):
                        finishes.append(c["finish_reason"])
                if event.get("usage"):
                    usage = event["usage"]
        if not done or len(finishes) != 1 or finishes[0] not in ("stop", "length"):
            out.errors.append(f"stream ended badly: done={done} finishes={finishes}")
            return
        if usage is not None and not 1 <= usage["completion_tokens"] <= max_tokens:
            out.errors.append(f"stream usage {usage} for max_tokens {max_tokens}")
        if usage is not None and finishes[0] == "length" and usage["completion_tokens"] != max_tokens:
            out.errors.append(f"length before max_tokens: {usage}")
        out.add("stream")
    else:
        r = client.post(base + path, json=body)
        if r.status_code != 200:
            out.errors.append(f"answered {r.status_code}: {r.text[:200]}")
            return
        o = r.json()
        usage, finish = o["usage"], o["choices"][0]["finish_reason"]
        n = usage["completion_tokens"]
        if not 1 <= n <= max_tokens or finish not in ("stop", "length") or (finish == "length" and n != max_tokens) \
                or usage["total_tokens"] != usage["prompt_tokens"] + n:
            out.errors.append(f"inconsistent answer for max_tokens {max_tokens}: {o}")
        out.add("plain")


def wait_quiet(base: str, timeout=60) -> dict:
    """Polls /metrics until nothing runs, waits or streams; returns the last sample."""
    deadline = time.time() + timeout
    while True:
        m = metrics(base)
        if all(m.get(k) == 0 for k in ("vattn_running_requests", "vattn_queue_depth", "vattn_open_streams",
                                       "vattn_engine_tracked_requests")):
            return m
        if time.time() > deadline:
            return m
        time.sleep(0.2)


def greedy(client: httpx.Client, base: str, prompt: str, n: int) -> str:
    r = client.post(base + "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": n, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_soak(server):
    base, proc = server
    rng = random.Random(2026)
    long_prompt = " ".join(rng.choice(WORDS) for _ in range(380))  # ~400 tokens: 5 of each tensor's pages
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    with httpx.Client(timeout=120, limits=limits) as client:
        out = Outcome()

        def batch(requests):
            with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
                for f in [pool.submit(run_one, base, client, r, out) for r in requests]:
                    f.result()

        # Warm-up: the same mix, so the allocator, the connection pool and the KV slots' pages reach their working
        # state before the baseline is taken; plus the two reference answers.
        t0 = time.time()
        short_before = greedy(client, base, "The three most useful kitchen tools are", 12)
        long_before = greedy(client, base, long_prompt, 8)
        batch([make_request(rng, -i) for i in range(1, 17)])
        warm_metrics = wait_quiet(base)
        warm = proc_status(proc.pid)

        out = Outcome()
        start = time.time()
        requests = [make_request(rng, i) for i in range(REQUESTS)]
        batch(requests[:REQUESTS // 2])
        wait_quiet(base)
        mid = proc_status(proc.pid)
        batch(requests[REQUESTS // 2:])
        soak_seconds = time.time() - start
        end_metrics = wait_quiet(base)
        end = proc_status(proc.pid)

        # Reclaiming from idle slots: the long request needs more pages than are free.
        capacity = end_metrics["vattn_kv_capacity_bytes"]
        free_before_long = capacity - end_metrics["vattn_kv_mapped_bytes"]
        long_after = greedy(client, base, long_prompt, 8)
        short_after = greedy(client, base, "The three most useful kitchen tools are", 12)
        final_metrics = wait_quiet(base)

    counts = {a: sum(r["action"] == a for r in requests) for a in
              ("complete", "invalid", "drop_mid_stream", "drop_while_waiting", "drop_at_once")}
    report = (f"\nsoak: {REQUESTS} requests in {soak_seconds:.0f} s (warm-up {start - t0:.0f} s), {CONCURRENCY} clients, "
              f"{SLOTS} slots, KV pool {KV_MIB} MiB ({'GPU' if GPU else 'CPU'}, {KV}"
              f"{'' if KV == 'paged' else ' ' + LAYOUT}); outcomes {out.kinds}; planned {counts}\n"
              f"  HTTP statuses { {k: v for k, v in end_metrics.items() if k.startswith('http_')} }\n"
              f"  cancelled {end_metrics.get('vattn_requests_cancelled_total')}, preemptions "
              f"{end_metrics.get('vattn_preemptions_total')}, generated tokens {end_metrics.get('vattn_generated_tokens_total')}\n"
              f"  KV mapped: warm-up {warm_metrics['vattn_kv_mapped_bytes'] / MiB:.1f} MiB, end "
              f"{end_metrics['vattn_kv_mapped_bytes'] / MiB:.1f} MiB of {capacity / MiB:.0f} MiB "
              f"(free before the long request {free_before_long / MiB:.1f} MiB)\n"
              f"  RSS MiB (VmRSS / RssAnon / RssShmem): warm-up {warm['VmRSS'] / MiB:.1f} / {warm['RssAnon'] / MiB:.1f} / "
              f"{warm['RssShmem'] / MiB:.1f}, half {mid['VmRSS'] / MiB:.1f} / {mid['RssAnon'] / MiB:.1f} / "
              f"{mid['RssShmem'] / MiB:.1f}, end {end['VmRSS'] / MiB:.1f} / {end['RssAnon'] / MiB:.1f} / "
              f"{end['RssShmem'] / MiB:.1f}")
    print(report)

    assert not out.errors, "\n".join(out.errors[:20]) + report
    assert out.kinds.get("stream", 0) + out.kinds.get("plain", 0) == counts["complete"], report
    for name in ("vattn_running_requests", "vattn_queue_depth", "vattn_open_streams", "vattn_engine_tracked_requests",
                 "vattn_kv_active_slots", "vattn_kv_used_bytes"):
        assert end_metrics[name] == 0, f"{name} = {end_metrics[name]} after the soak" + report
        assert final_metrics[name] == 0, f"{name} = {final_metrics[name]} at the end" + report
    assert end_metrics["vattn_kv_mapped_bytes"] <= capacity
    assert end_metrics["vattn_requests_rejected_total"] == 0, "429s: raise --max-waiting" + report
    # Abandoned requests are 499 (the client's doing), never a server error.
    assert not [k for k in end_metrics if k.startswith("http_5")], report + str(end_metrics)
    dropped = counts["drop_mid_stream"] + counts["drop_while_waiting"] + counts["drop_at_once"]
    assert 1 <= end_metrics["vattn_requests_cancelled_total"] <= dropped + 16, report  # + warm-up's drops
    need = long_request_bytes()
    if need is not None:
        assert free_before_long < need, \
            f"the long request (~{LONG_TOKENS} tokens, at least {need / MiB:.1f} MiB) should need reclaimed pages" + report
    assert long_after == long_before and short_after == short_before, (long_before, long_after, short_before, short_after)
    assert end["RssAnon"] - warm["RssAnon"] <= 64 * MiB, report
    assert end["RssAnon"] - mid["RssAnon"] <= 24 * MiB, report
    assert end["VmRSS"] <= warm["VmRSS"] + KV_MIB * MiB + 64 * MiB, report

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
