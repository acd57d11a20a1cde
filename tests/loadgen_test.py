"""bench/http/loadgen.py, the `vllm bench serve`-style HTTP load generator, run as a subprocess.

Against the real `vattn serve` (VATTN_BIN, default .build/debug/vattn) with the default model on a free loopback port:
a 6-request token-id trace sent all at once and as a Poisson process must complete with exactly the asked output
tokens (max_tokens + ignore_eos) and sane latency percentiles; a wrong --model must fail every request and exit
non-zero. Against a tiny fake SSE server (no binary needed): an SSE error event, a stream cut short without a
finish_reason, and a stalled stream past --timeout each count as failed requests with their messages kept.
"""

import http.server
import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("VATTN_BIN", os.path.join(ROOT, ".build", "debug", "vattn"))
LOADGEN = os.path.join(ROOT, "bench", "http", "loadgen.py")
MODEL = "smollm2-135m"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not os.path.exists(BIN):
        pytest.fail(f"{BIN} not built (swift build --product vattn)")
    port = free_port()
    proc = subprocess.Popen(
        [BIN, "serve", "--host", "127.0.0.1", "--port", str(port), "--slots", "4", "--max-context", "1024",
         "--max-waiting", "16"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("vattn serve did not start: " + (proc.stdout.read() if proc.stdout else ""))
        time.sleep(0.2)
    yield base
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("vattn serve did not stop within 30 s of SIGTERM")
    assert proc.returncode == 0, out


def write_trace(path, n=6, seed=1):
    rng = random.Random(seed)
    reqs = [{"prompt_token_ids": [rng.randint(1, 2000) for _ in range(rng.randint(5, 40))],
             "output_len": rng.randint(3, 12)} for _ in range(n)]
    with open(path, "w") as f:
        for r in reqs:
            f.write(json.dumps(dict(r, prompt_len=len(r["prompt_token_ids"]))) + "\n")
    return reqs


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    return str(path), write_trace(path)


def loadgen(tmp_path, base, model, trace_path, *extra, timeout=120):
    out = tmp_path / "result.json"
    p = subprocess.run([sys.executable, LOADGEN, "--base-url", base, "--model", model, "--trace", trace_path,
                        "--json", str(out), *extra], capture_output=True, text=True, timeout=timeout)
    assert out.exists(), p.stdout + p.stderr
    return p, json.loads(out.read_text())


def check_stats(st, positive=True):
    assert all(st[k] is not None for k in ("mean", "median", "p90", "p99")), st
    if positive:
        assert st["mean"] > 0 and st["median"] > 0
    assert st["median"] <= st["p90"] <= st["p99"], st


def check_complete(res, reqs):
    assert res["completed"] == len(reqs) and res["failed"] == 0, res["errors"]
    assert res["errors"] == []
    assert res["total_input_tokens"] == sum(len(r["prompt_token_ids"]) for r in reqs)
    want = sum(r["output_len"] for r in reqs)
    assert res["expected_output_tokens"] == want
    # Exactly max_tokens each: needs the server to honour ignore_eos.
    assert res["total_output_tokens"] == want, "fewer tokens than asked: is ignore_eos honoured?"
    assert res["duration_s"] > 0
    assert res["request_throughput"] == pytest.approx(len(reqs) / res["duration_s"])
    assert res["output_throughput"] == pytest.approx(want / res["duration_s"])
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2el_ms"):
        check_stats(res[key])
    assert res["ttft_ms"]["p99"] <= res["e2el_ms"]["p99"]
    assert res["e2el_ms"]["p99"] <= res["duration_s"] * 1000


def test_burst(server, trace, tmp_path):
    path, reqs = trace
    p, res = loadgen(tmp_path, server, MODEL, path, "--label", "burst")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Serving Benchmark Result" in p.stdout and "Mean TTFT (ms)" in p.stdout
    assert res["label"] == "burst" and res["model"] == MODEL and res["base_url"] == server
    assert res["num_prompts"] == 6 and res["request_rate"] == "inf" and res["max_concurrency"] is None
    check_complete(res, reqs)


def test_poisson_rate(server, trace, tmp_path):
    path, reqs = trace
    p, res = loadgen(tmp_path, server, MODEL, path, "--request-rate", "20", "--seed", "3", "--max-concurrency", "3")
    assert p.returncode == 0, p.stdout + p.stderr
    assert res["request_rate"] == 20.0 and res["max_concurrency"] == 3
    check_complete(res, reqs)
    p, res = loadgen(tmp_path, server, MODEL, path, "--num-prompts", "4", "--request-rate", "50")
    assert p.returncode == 0, p.stdout + p.stderr
    check_complete(res, reqs[:4])


def test_workers_split_the_trace(server, trace, tmp_path):
    path, reqs = trace
    for workers in ("1", "4"):
        p, res = loadgen(tmp_path, server, MODEL, path, "--workers", workers, "--request-rate", "30", "--seed", "5")
        assert p.returncode == 0, p.stdout + p.stderr
        assert res["workers"] == int(workers)
        check_complete(res, reqs)
    # --max-concurrency bounds the whole run: 2 in flight gives at most 2 workers.
    p, res = loadgen(tmp_path, server, MODEL, path, "--workers", "4", "--max-concurrency", "2")
    assert p.returncode == 0 and res["workers"] == 2
    check_complete(res, reqs)


def test_wrong_model(server, trace, tmp_path):
    path, reqs = trace
    p, res = loadgen(tmp_path, server, "no-such-model", path)
    assert p.returncode != 0
    assert res["completed"] == 0 and res["failed"] == len(reqs)
    assert res["total_output_tokens"] == 0
    assert res["ttft_ms"]["mean"] is None
    assert len(res["errors"]) == 1 and "404" in res["errors"][0] and "no-such-model" in res["errors"][0]
    assert "404" in p.stderr


# A fake server: each request gets the canned SSE reply its model name picks.

CHUNK = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
         "choices": [{"index": 0, "text": "", "finish_reason": None, "logprobs": None}]}


def sse(obj):
    return ("data: " + json.dumps(obj) + "\n\n").encode()


def done_chunk():
    c = json.loads(json.dumps(CHUNK))
    c["choices"][0]["finish_reason"] = "length"
    return c


REPLIES = {
    "ok": [sse(CHUNK), sse(CHUNK), sse(done_chunk()),
           sse(dict(CHUNK, choices=[], usage={"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})),
           b"data: [DONE]\n\n"],
    "no-usage": [sse(CHUNK), sse(done_chunk()), b"data: [DONE]\n\n"],
    "error": [sse(CHUNK), sse({"error": {"message": "the engine failed: out of KV pages", "type": "server_error",
                                         "param": None, "code": None}})],
    "cut": [sse(CHUNK), sse(CHUNK), b"data: [DONE]\n\n"],
    "stall": [sse(CHUNK), "stall"],
}


class FakeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/completions"
        assert body["stream"] is True and body["ignore_eos"] is True and body["temperature"] == 0
        assert body["stream_options"] == {"include_usage": True}
        assert isinstance(body["prompt"], list) and all(isinstance(t, int) for t in body["prompt"])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for part in REPLIES[body["model"]]:
            if part == "stall":
                time.sleep(3)
                return
            self.wfile.write(part)
            self.wfile.flush()
            time.sleep(0.01)


@pytest.fixture(scope="module")
def fake():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def small_trace(tmp_path):
    path = tmp_path / "small.jsonl"
    with open(path, "w") as f:
        for n in (3, 5):
            f.write(json.dumps({"prompt_token_ids": list(range(1, n + 1)), "output_len": 3}) + "\n")
    return str(path)


def test_fake_ok(fake, small_trace, tmp_path):
    p, res = loadgen(tmp_path, fake, "ok", small_trace)
    assert p.returncode == 0, p.stdout + p.stderr
    assert res["completed"] == 2 and res["total_output_tokens"] == 6 and res["total_input_tokens"] == 8
    check_stats(res["itl_ms"])
    # Without a usage chunk the choice chunks are counted.
    p, res = loadgen(tmp_path, fake, "no-usage", small_trace)
    assert p.returncode == 0 and res["total_output_tokens"] == 4


@pytest.mark.parametrize("model,message", [
    ("error", "APIError: the engine failed: out of KV pages"),
    ("cut", "without a finish_reason"),
    ("stall", "TimeoutError"),
])
def test_fake_failures(fake, small_trace, tmp_path, model, message):
    p, res = loadgen(tmp_path, fake, model, small_trace, "--timeout", "1")
    assert p.returncode == 1
    assert res["completed"] == 0 and res["failed"] == 2
    assert len(res["errors"]) == 1 and message in res["errors"][0], res["errors"]
    assert message in p.stderr


def test_percentile_matches_numpy():
    spec = importlib.util.spec_from_file_location("loadgen", LOADGEN)
    lg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lg)
    rng = random.Random(0)
    cases = [[5.0], [1.0, 2.0], [rng.random() for _ in range(7)], [rng.expovariate(1) for _ in range(101)]]
    np = pytest.importorskip("numpy")
    for v in cases:
        for q in (0, 1, 25, 50, 90, 99, 100):
            assert lg.percentile(v, q) == pytest.approx(float(np.percentile(v, q)), rel=1e-12, abs=1e-15)
        st = lg.stats_ms(v)
        assert st["std"] == pytest.approx(float(np.std(v)) * 1000)
