"""Property-based HTTP test of `vattn serve` (hypothesis; real binary, real model, 127.0.0.1 only).

Strategies generate request bodies for POST /v1/completions and /v1/chat/completions, valid ones (max_tokens 1-4, so
generation is cheap) and hostile ones: wrong types for every field, missing fields, huge / negative / non-finite
numbers, nested junk, non-JSON bytes, unicode with control tokens such as <|im_start|>, repeated keys, stop lists,
unknown fields; and other methods on known and unknown paths. For every response:

* the status is below 500;
* the body is JSON: an object with the success shape, or an `error` object whose `message` is a string (a stream is
  SSE whose events are such objects, then `[DONE]`);
* a 4xx body has a string `error.type`;

and after the run /health is 200 and a greedy request still works (and gives the same text twice).

Runs derandomized (the same examples every run), so a CI failure reproduces locally.

Environment: VATTN_BIN, VATTN_SERVE_ARGS, VATTN_START_TIMEOUT (as in openai_client_test.py); PROPERTY_EXAMPLES, the
number of examples across all the properties (default 150).
"""

import json
import math
import os
import time
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vattn_server import MODEL, Server
TOTAL = int(os.environ.get("PROPERTY_EXAMPLES", "150"))
TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def share(fraction: float) -> int:
    """This property's part of PROPERTY_EXAMPLES (at least one example)."""
    return max(1, round(TOTAL * fraction))


def prop_settings(fraction: float):
    return settings(max_examples=share(fraction), deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def server():
    s = Server(context=512)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    # No retries: httpx's Client never retries a request (transport retries only cover connecting, and are 0).
    with httpx.Client(base_url=server.base, timeout=TIMEOUT) as c:
        yield c


# ---------------------------------------------------------------------------------------------------------------
# The properties every response must have.

def check_error_object(obj, where: str):
    assert isinstance(obj, dict) and set(obj) >= {"error"}, f"{where}: not an error object: {obj!r}"
    err = obj["error"]
    assert isinstance(err, dict), f"{where}: `error` is not an object: {obj!r}"
    assert isinstance(err.get("message"), str), f"{where}: `error.message` is not a string: {obj!r}"


def check_success(obj, path: str):
    assert isinstance(obj, dict), obj
    if path == "/v1/completions":
        assert obj.get("object") == "text_completion", obj
        assert isinstance(obj.get("choices"), list) and obj["choices"], obj
        assert all(isinstance(c.get("text"), str) for c in obj["choices"]), obj
    elif path == "/v1/chat/completions":
        assert obj.get("object") == "chat.completion", obj
        assert isinstance(obj.get("choices"), list) and obj["choices"], obj
        for c in obj["choices"]:
            assert isinstance(c.get("message"), dict), obj
            assert c["message"].get("content") is None or isinstance(c["message"]["content"], str), obj
    elif path == "/health":
        assert obj.get("status") == "ok", obj
    elif path == "/v1/models":
        assert obj.get("object") == "list" and isinstance(obj.get("data"), list), obj


def check_stream(text: str, path: str):
    """An SSE stream: `data: {json}` events, each a chunk or an error object, ending in `data: [DONE]`."""
    events = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
    assert events, f"empty stream: {text!r}"
    assert events[-1] == "[DONE]", f"stream does not end with [DONE]: {text[-500:]!r}"
    want = "text_completion" if path == "/v1/completions" else "chat.completion.chunk"
    for e in events[:-1]:
        obj = json.loads(e)
        assert isinstance(obj, dict), e
        if "error" in obj:
            check_error_object(obj, "stream event")
        else:
            assert obj.get("object") == want, obj
            assert isinstance(obj.get("choices"), list), obj


def check_response(r: httpx.Response, method: str, path: str):
    desc = f"{method} {path} -> {r.status_code}"
    event(f"status {r.status_code}")  # pytest --hypothesis-show-statistics shows the mix
    assert r.status_code < 500, f"{desc}: {r.text[:1000]!r}"
    if method == "HEAD":
        return  # no body to check
    ctype = r.headers.get("content-type", "")
    if r.status_code == 200 and path == "/metrics" and method == "GET":
        assert ctype.startswith("text/plain"), desc
        return
    if r.status_code == 200 and ctype.startswith("text/event-stream"):
        check_stream(r.text, path)
        return
    try:
        obj = json.loads(r.content)
    except ValueError:
        raise AssertionError(f"{desc}: body is not JSON: {r.content[:1000]!r}")
    assert isinstance(obj, dict), f"{desc}: body is not a JSON object: {obj!r}"
    if "error" in obj or r.status_code >= 400:
        check_error_object(obj, desc)
    else:
        check_success(obj, path)
    if 400 <= r.status_code < 500:
        assert isinstance(obj["error"].get("type"), str), f"{desc}: 4xx without a string `error.type`: {obj!r}"


def post(client, path: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    r = client.post(path, content=content, headers={"content-type": content_type})
    check_response(r, "POST", path)
    return r


# ---------------------------------------------------------------------------------------------------------------
# Strategies.

CONTROL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>system\n", "<|im_start|>assistant\n",
           "<s>", "</s>", "<unk>", "<|begin_of_text|>", "\u0000", "\ufeff", "\ud7ff", "\U0001F600", "\u202e",
           "\r\n", "\x1b[31m", "data: [DONE]\n\n"]

# Short text: any unicode (surrogates excluded: they are not UTF-8), with the model's control tokens mixed in.
short_text = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(CONTROL)), max_size=5).map("".join)

small_max_tokens = st.integers(1, 4)

# Numbers a server might choke on.
bad_numbers = st.sampled_from([
    0, -1, -4, 2**31, 2**31 - 1, -2**31, 2**53 + 1, 2**63 - 1, 2**63, -2**63, 2**64, 10**30, -10**30,
    0.0, -0.0, 0.5, 1.5, 4.0, 1e308, -1e308, 5e-324, 1e-300, math.inf, -math.inf, math.nan,
])

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), bad_numbers,
                        st.floats(allow_nan=True, allow_infinity=True), short_text)
json_junk = st.recursive(json_scalar,
                         lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                 st.dictionaries(short_text, inner, max_size=4)),
                         max_leaves=12)

stop_values = st.one_of(st.none(), short_text, st.lists(short_text, max_size=4))


@st.composite
def completion_body(draw):
    body = {"model": MODEL, "prompt": draw(st.one_of(short_text.filter(bool), st.lists(short_text.filter(bool), min_size=1,
                                                                                         max_size=1),
                                                      st.lists(st.integers(0, 40000), min_size=1, max_size=8))),
            "max_tokens": draw(small_max_tokens)}
    for key, strat in [("temperature", st.floats(0, 2)), ("top_p", st.floats(0.01, 1)),
                       ("top_k", st.integers(0, 100)), ("seed", st.integers(0, 2**31)), ("stop", stop_values),
                       ("stream", st.booleans()), ("echo", st.booleans()), ("ignore_eos", st.booleans()),
                       ("n", st.just(1)), ("stream_options", st.just({"include_usage": True}))]:
        if draw(st.booleans()):
            body[key] = draw(strat)
    return body


message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]),
     "content": st.one_of(short_text, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": short_text}),
                                               min_size=1, max_size=3))})


@st.composite
def chat_body(draw):
    msgs = draw(st.lists(message, min_size=1, max_size=4))
    if msgs[-1]["role"] == "assistant" and draw(st.booleans()):
        msgs.append({"role": "user", "content": draw(short_text)})
    body = {"model": MODEL, "messages": msgs}
    body[draw(st.sampled_from(["max_tokens", "max_completion_tokens"]))] = draw(small_max_tokens)
    for key, strat in [("temperature", st.floats(0, 2)), ("top_p", st.floats(0.01, 1)),
                       ("top_k", st.integers(0, 100)), ("seed", st.integers(0, 2**31)), ("stop", stop_values),
                       ("stream", st.booleans()), ("ignore_eos", st.booleans()), ("n", st.just(1)),
                       ("stream_options", st.just({"include_usage": True}))]:
        if draw(st.booleans()):
            body[key] = draw(strat)
    return body


def cheap(body: dict) -> dict:
    """A hostile body that happens to be valid must still be cheap: a whole-number token limit in 5...511 (which the
    server would accept and generate) becomes 4. Missing, the limit is the server's default (16, cheap)."""
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            continue
        if 4 < v < 512:
            body[key] = 4
    return body


@st.composite
def hostile(draw, valid):
    """A valid body with some fields replaced by junk, some removed, and unknown ones added."""
    body = draw(valid)
    fields = sorted(set(body) | {"model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature",
                                 "top_p", "top_k", "seed", "n", "stop", "stream", "stream_options", "echo",
                                 "ignore_eos", "logprobs", "logit_bias", "user", "tools", "response_format"})
    for key in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4, unique=True)):
        action = draw(st.sampled_from(["junk", "junk", "number", "delete"]))
        if action == "delete":
            body.pop(key, None)
        elif action == "number":
            body[key] = draw(bad_numbers)
        else:
            body[key] = draw(json_junk)
    if "messages" in body and isinstance(body["messages"], list) and body["messages"] and draw(st.booleans()):
        # Junk inside a message: a bad role, content of the wrong type, a part of an unknown type, extra keys.
        i = draw(st.integers(0, len(body["messages"]) - 1))
        m = body["messages"][i] if isinstance(body["messages"][i], dict) else {}
        m = dict(m)
        m[draw(st.sampled_from(["role", "content", "name", "tool_calls", "junk"]))] = draw(json_junk)
        if draw(st.booleans()):
            m["content"] = [{"type": draw(st.sampled_from(["text", "image_url", "", "TEXT"])),
                             draw(st.sampled_from(["text", "image_url", "x"])): draw(json_junk)}]
        body["messages"][i] = m
    for _ in range(draw(st.integers(0, 2))):
        body[draw(short_text)] = draw(json_junk)  # unknown fields (or a known one, junk)
    return cheap(body)


def encode(body) -> bytes:
    """JSON as Python writes it: NaN and Infinity come out bare (not JSON), which the server must refuse cleanly."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def raw_body(draw, valid):
    """Bytes that are not a JSON object of the right shape, or JSON with repeated keys."""
    kind = draw(st.sampled_from(["bytes", "truncated", "duplicate", "top-level", "deep", "bom", "latin1",
                                 "overlong-utf8", "empty"]))
    body = encode(draw(valid))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncated":
        return body[:draw(st.integers(0, max(0, len(body) - 1)))]
    if kind == "duplicate":
        # Repeated keys, the last with junk or a valid value; the server takes the last.
        obj = json.loads(body)
        key = draw(st.sampled_from(sorted(obj)))
        last = draw(st.one_of(json_junk, st.just(obj[key])))
        first = draw(json_junk)
        inner = body.decode()[1:-1]
        extra = f"{json.dumps(key)}: {json.dumps(first)}, "
        return ("{" + extra + inner + f", {json.dumps(key)}: {json.dumps(last)}" + "}").encode()
    if kind == "top-level":
        return encode(draw(st.one_of(json_scalar, st.lists(json_junk, max_size=3), st.just([json.loads(body)]))))
    if kind == "deep":
        depth = draw(st.sampled_from([100, 1000, 10000, 100000]))
        key = draw(st.sampled_from(["prompt", "messages", "stop", "model", "junk"]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (f'{{"model": "{MODEL}", "max_tokens": 1, "{key}": ' + opener * depth + "1" + closer * depth
                + "}").encode()
    if kind == "bom":
        return b"\xef\xbb\xbf" + body
    if kind == "latin1":
        return body.decode("utf-8", "surrogatepass").encode("latin-1", "replace") + b"\xff\xfe"
    if kind == "overlong-utf8":
        return body.replace(b'"model"', b'"mod\xc0\xafel"', 1) + b"\xed\xa0\x80"
    return b""


METHODS = ["GET", "PUT", "DELETE", "PATCH", "POST", "HEAD", "OPTIONS", "TRACE"]
PATHS = ["/health", "/v1/models", "/metrics", "/v1/chat/completions", "/v1/completions", "/", "/v1", "/v1/",
         "/v1/completions/", "/v1//completions", "/V1/completions", "/v1/models/smollm2-135m", "/v1/embeddings",
         "/health?x=1", "/v1/completions?stream=true", "/%2e%2e/etc/passwd", "/v1/%00", "/" + "a" * 2000,
         "/v1/chat/completions/../completions", "/\u00e9", "/v1/completions#frag"]


# ---------------------------------------------------------------------------------------------------------------
# The properties.

@prop_settings(0.15)
@given(body=completion_body())
def test_valid_completions(client, body):
    r = post(client, "/v1/completions", encode(body))
    assert r.status_code == 200, (body, r.text)


@prop_settings(0.15)
@given(body=chat_body())
def test_valid_chat(client, body):
    r = post(client, "/v1/chat/completions", encode(body))
    assert r.status_code == 200, (body, r.text)


@prop_settings(0.2)
@given(body=hostile(completion_body()))
def test_hostile_completions(client, body):
    post(client, "/v1/completions", encode(body))


@prop_settings(0.2)
@given(body=hostile(chat_body()))
def test_hostile_chat(client, body):
    post(client, "/v1/chat/completions", encode(body))


@prop_settings(0.15)
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]), data=st.data(),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))
def test_raw_bodies(client, path, data, content_type):
    content = data.draw(raw_body(completion_body() if path == "/v1/completions" else chat_body()))
    post(client, path, content, content_type)


@prop_settings(0.15)
@given(method=st.sampled_from(METHODS), path=st.one_of(st.sampled_from(PATHS),
                                                       st.text("abcxyz/._-%0123456789", max_size=30).map(
                                                           lambda p: "/" + p)),
       content=st.one_of(st.just(b""), st.binary(max_size=50), completion_body().map(encode)))
def test_methods_and_paths(client, method, path, content):
    # Built by hand so httpx sends the path as written (no normalisation of `..` or `//`).
    url = client.base_url.copy_with(raw_path=urllib.parse.quote(path, safe="/?%=&.").encode("ascii"))
    r = client.request(method, url, content=content if method not in ("GET", "HEAD") else None)
    check_response(r, method, path.split("?")[0].split("#")[0])


def test_still_healthy_after(client, server):
    assert server.proc.poll() is None, "vattn serve exited:\n" + server.output()[-4000:]
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
    texts = []
    for _ in range(2):
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        texts.append(r.json()["choices"][0]["text"])
        assert r.json()["usage"]["completion_tokens"] >= 1
    assert texts[0] == texts[1], texts
    r = client.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 4, "temperature": 0,
                                                 "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200 and isinstance(r.json()["choices"][0]["message"]["content"], str), r.text
    # Nothing is left running or waiting once the run is over.
    deadline = time.time() + 10
    while True:
        h = client.get("/health").json()
        if h["running"] == 0 and h["waiting"] == 0:
            break
        assert time.time() < deadline, h
        time.sleep(0.1)
