"""How `vattn serve` ends, as an orchestrator sees it (real binary, real model, 127.0.0.1 only).

* SIGTERM with requests in flight: /health turns 503 at once, new requests get 503, the requests in flight finish, the
  process exits 0 ("stopped");
* with --drain-timeout: requests still running at the limit end with an error (a JSON 503 body, or an SSE `error`
  event with no `[DONE]`), the log says how many, and the process still exits 0 soon after the limit;
* a second signal exits at once with status 1, whatever is in flight.

Environment: VATTN_BIN, VATTN_SERVE_ARGS (as in openai_client_test.py).
"""

import json
import signal
import threading
import time

import httpx
import pytest

import vattn_server
from vattn_server import MODEL
CONTEXT = 4096


class Server(vattn_server.Server):
    def __init__(self, *args):
        super().__init__(*args, context=CONTEXT)
        # How fast one request decodes here (a 2-core CPU: ~20 tokens/s; a GPU: ~1,000), so "a request still running
        # N seconds from now" means the same on both. The faster of two: a GPU's first request captures CUDA graphs,
        # and from it alone a "4 s" request took a fraction of a second.
        self.tokens_per_second = 0.0
        for _ in range(2):
            t0 = time.time()
            r = httpx.post(self.base + "/v1/completions", json={"model": MODEL, "prompt": "Once upon a time",
                           "max_tokens": 32, "temperature": 0, "ignore_eos": True}, timeout=60)
            assert r.status_code == 200, r.text
            self.tokens_per_second = max(self.tokens_per_second, 32 / (time.time() - t0))

    def tokens_for(self, seconds: float) -> int:
        """max_tokens for a request that decodes about `seconds` (capped by the context)."""
        return max(8, min(CONTEXT - 16, int(self.tokens_per_second * seconds)))

    def running(self) -> int:
        return httpx.get(self.base + "/health", timeout=5).json()["running"]


def long_request(base: str, stream: bool, max_tokens: int, results: list):
    """A request of `max_tokens` (ignore_eos); appends (status, body text)."""
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": stream}
    try:
        with httpx.Client(timeout=300) as c:
            r = c.post(base + "/v1/completions", json=body)
            results.append((r.status_code, r.text))
    except httpx.HTTPError as e:
        results.append((None, repr(e)))


def start_long(s: Server, stream: bool, n: int, seconds: float = 30):
    """n requests that cannot finish within `seconds`."""
    results: list = []
    threads = [threading.Thread(target=long_request, args=(s.base, stream, s.tokens_for(seconds), results))
               for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


def wait_running(server: Server, n: int):
    deadline = time.time() + 60
    while server.running() < n:
        assert time.time() < deadline, "requests never started running"
        time.sleep(0.1)


def test_sigterm_drains_requests_in_flight_then_exits_0():
    s = Server()
    # Still running when the signal comes (about 4 s of decoding), done well inside the 30 s drain.
    n = s.tokens_for(4)
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": n, "temperature": 0, "ignore_eos": True}
    results: list = []
    t = threading.Thread(target=lambda: results.append(httpx.post(s.base + "/v1/completions", json=body, timeout=60)))
    t.start()
    wait_running(s, 1)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    health = httpx.get(s.base + "/health", timeout=5)
    assert health.status_code == 503 and health.json()["status"] == "shutting_down"
    assert health.json()["running"] == 1, f"the request in flight ended before the test could ask: {health.json()}"
    late = httpx.post(s.base + "/v1/completions", json=body, timeout=10)
    assert late.status_code == 503 and late.json()["error"]["type"] == "server_error"
    t.join(60)
    assert results and results[0].status_code == 200, results
    assert results[0].json()["usage"]["completion_tokens"] == n  # the request in flight finished whole
    assert s.wait(30) == 0
    out = s.output()
    assert "draining 1 requests" in out and "stopped" in out, out


def test_drain_limit_ends_what_is_left_with_an_error():
    s = Server("--drain-timeout", "1")
    plain, plain_results = start_long(s, False, 1)
    streamed, stream_results = start_long(s, True, 1)
    wait_running(s, 2)
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    for t in plain + streamed:
        t.join(60)
    assert s.wait(30) == 0
    assert time.time() - t0 < 20
    status, text = plain_results[0]
    assert status == 503, text
    assert json.loads(text)["error"]["code"] == "shutting_down"
    status, text = stream_results[0]
    assert status == 200
    events = [b[len("data: "):] for b in text.split("\n\n") if b.startswith("data: ")]
    assert events[-1] != "[DONE]", "a stream cut by the drain limit must not look complete"
    assert json.loads(events[-1])["error"]["code"] == "shutting_down"
    assert "drain limit reached: ended 2 requests" in s.output()


def test_second_signal_exits_at_once_with_status_1():
    s = Server()
    threads, _ = start_long(s, True, 2)
    wait_running(s, 2)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    t0 = time.time()
    s.proc.send_signal(signal.SIGINT)
    assert s.wait(10) == 1
    assert time.time() - t0 < 5
    assert "second SIGINT: exiting now" in s.output()
    for t in threads:
        t.join(30)
