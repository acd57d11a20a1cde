"""`vattn serve` driven by the official `openai` Python client, on 127.0.0.1 only.

Starts the binary (VATTN_BIN, default .build/debug/vattn) on a free loopback port with the default model, then checks
chat and completions, streaming and not, concurrent clients, and the status codes of bad inputs. Every request is
bounded (few tokens, a timeout, no retries); the server is stopped with SIGTERM and must exit cleanly.

Environment (all optional; unset, the server runs as CI runs it, on the CPU): VATTN_SERVE_ARGS, extra flags appended
to the `vattn serve` command line (split like a shell does, e.g. "--backend cuda --kv paged"); VATTN_START_TIMEOUT,
seconds to wait for /health (default 60; a GPU's first start compiles kernels unless VATTN_KERNEL_CACHE has them).
"""

import concurrent.futures
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import openai
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("VATTN_BIN", os.path.join(ROOT, ".build", "debug", "vattn"))
MODEL = "smollm2-135m"
SERVE_ARGS = shlex.split(os.environ.get("VATTN_SERVE_ARGS", ""))
START_TIMEOUT = float(os.environ.get("VATTN_START_TIMEOUT", "60"))


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
         "--max-waiting", "16", *SERVE_ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + START_TIMEOUT
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
    assert "stopped" in out


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
                                       max_tokens=12, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 10
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
                                            max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    text, finishes, usage = "", [], None
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.finish_reason:
                finishes.append(c.finish_reason)
        if chunk.usage:
            usage = chunk.usage
    assert text == choice.message.content
    assert finishes == [choice.finish_reason]
    assert usage is not None and usage.completion_tokens == r.usage.completion_tokens


def test_completions(client):
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=10, temperature=0)
    text = r.choices[0].text
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 10
    streamed = "".join(c.choices[0].text for c in
                       client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=10, temperature=0, stream=True)
                       if c.choices)
    assert streamed == text
    cut = text[3:5]
    for stop in (cut, ["zzz", cut]):
        s = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=10, temperature=0, stop=stop)
        assert s.choices[0].finish_reason == "stop"
        assert text.startswith(s.choices[0].text) and cut not in s.choices[0].text
    a = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=1, top_p=0.9, seed=7)
    b = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=1, top_p=0.9, seed=7)
    assert a.choices[0].text == b.choices[0].text


def test_top_k(client):
    """vLLM's extension, through the client's extra_body: top_k 1 leaves only the most likely token."""
    greedy = client.completions.create(model=MODEL, prompt="My favourite animal is the", max_tokens=10,
                                       temperature=0).choices[0].text
    one = client.completions.create(model=MODEL, prompt="My favourite animal is the", max_tokens=10, temperature=1.5,
                                    seed=3, extra_body={"top_k": 1}).choices[0].text
    assert one == greedy
    for bad in (-2, 1.5, "5"):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                           extra_body={"top_k": bad})
        assert e.value.body["param"] == "top_k"


def test_concurrent_clients(client):
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time,", "1, 2, 3, 4,",
               "The quick brown fox", "Water boils at"]
    alone = {p: client.completions.create(model=MODEL, prompt=p, max_tokens=8, temperature=0).choices[0].text
             for p in prompts}

    def one(i):
        p = prompts[i % len(prompts)]
        if i % 2:
            text = "".join(c.choices[0].text for c in
                           client.completions.create(model=MODEL, prompt=p, max_tokens=8, temperature=0, stream=True)
                           if c.choices)
        else:
            text = client.completions.create(model=MODEL, prompt=p, max_tokens=8, temperature=0).choices[0].text
        return p, text

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(12)))
    for p, text in results:
        assert text == alone[p], p  # batching changes nothing


def post(server, path, body: bytes):
    req = urllib.request.Request(server + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bad_inputs(server, client):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=msgs)
    cases = [
        (dict(model=MODEL, messages=[]), openai.BadRequestError),
        (dict(model=MODEL, messages=msgs, n=2), openai.BadRequestError),
        (dict(model=MODEL, messages=msgs, max_tokens=0), openai.BadRequestError),
        (dict(model=MODEL, messages=msgs, max_tokens=100000), openai.BadRequestError),
        (dict(model=MODEL, messages=msgs, temperature=5), openai.BadRequestError),
        (dict(model=MODEL, messages=[{"role": "user", "content": "hello world " * 600}]), openai.BadRequestError),
    ]
    for kwargs, error in cases:
        with pytest.raises(error) as e:
            client.chat.completions.create(**kwargs)
        assert e.value.status_code == 400
        assert e.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="")
    # Raw bodies the client would never send.
    for path, body, param in [
        ("/v1/chat/completions", b'{"model": "smollm2-135m", "messages": [', None),
        ("/v1/chat/completions", b'{"model": "smollm2-135m", "messages": "hi"}', "messages"),
        ("/v1/completions", b'{"model": "smollm2-135m", "prompt": "hi", "max_tokens": "ten"}', "max_tokens"),
    ]:
        status, obj = post(server, path, body)
        assert status == 400
        assert set(obj["error"]) == {"message", "type", "param", "code"}
        assert obj["error"]["param"] == param
    # Still serving.
    assert client.completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices[0].text is not None


def test_metrics(server):
    with urllib.request.urlopen(server + "/metrics", timeout=10) as r:
        text = r.read().decode()
    for name in ("vattn_requests_total", "vattn_generated_tokens_total", "vattn_queue_depth",
                 "vattn_engine_step_seconds_bucket", "vattn_kv_mapped_bytes", "vattn_kv_used_bytes",
                 "vattn_preemptions_total"):
        assert name in text
