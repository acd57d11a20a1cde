"""The `vattn` binary as users run it: the demo (no arguments) and `vattn chat` driven through a pipe.

Uses the built binary (VATTN_BIN, default .build/debug/vattn) and the default model (scripts/fixtures/fetch_model.sh).
Answers are greedy (--temperature 0) and short, so every run is quick and repeatable.

Environment (all optional; unset, the tests run as CI runs them, on the CPU): VATTN_ARGS, extra flags appended to
every demo and chat invocation (split like a shell does, e.g. "--backend cuda"); VATTN_EXPECT_GPU=1 says a GPU is
present, so the check that `--backend cuda` fails clearly without one is skipped.
"""

import os
import re
import shlex
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("VATTN_BIN", os.path.join(ROOT, ".build", "debug", "vattn"))
EXTRA_ARGS = shlex.split(os.environ.get("VATTN_ARGS", ""))
EXPECT_GPU = os.environ.get("VATTN_EXPECT_GPU") == "1"


def vattn(args, stdin="", timeout=240, extra=True):
    """Runs the binary; `extra`: append VATTN_ARGS (demo and chat runs; not --help or the no-GPU check)."""
    if not os.path.exists(BIN):
        pytest.fail(f"{BIN} not built (swift build --product vattn)")
    return subprocess.run([BIN, *args, *(EXTRA_ARGS if extra else [])], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def prompts(stderr: str):
    """The prompts `vattn chat --show-prompt` printed, in order."""
    return re.findall(r"\[prompt, \d+ tokens\]\n(.*?)\n\[end of prompt\]", stderr, re.S)


def test_chat_pipe_keeps_history_and_reset_forgets_it():
    first, second, third = "My name is Ada. Say hello.", "What is my name?", "Name a colour."
    r = vattn(["chat", "--temperature", "0", "--max-tokens", "12", "--max-context", "512", "--show-prompt",
               "--system", "Answer briefly."],
              stdin=f"{first}\n\n{second}\n/reset\n{third}\n")
    assert r.returncode == 0, r.stderr
    p = prompts(r.stderr)
    assert len(p) == 3, r.stderr  # the empty line is not a turn
    assert p[0].startswith("<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n" + first)
    # The second turn's prompt is the whole conversation: first question, the model's first reply, then the new one.
    m = re.fullmatch(r"<\|im_start\|>system\nAnswer briefly\.<\|im_end\|>\n"
                     r"<\|im_start\|>user\n" + re.escape(first) + r"<\|im_end\|>\n"
                     r"<\|im_start\|>assistant\n(.*)<\|im_end\|>\n"
                     r"<\|im_start\|>user\n" + re.escape(second) + r"<\|im_end\|>\n<\|im_start\|>assistant\n", p[1], re.S)
    assert m, p[1]
    reply1 = m.group(1)
    assert reply1.strip()
    # Every reply reaches standard output, one after the other: the first is exactly what the history recorded.
    assert r.stdout.startswith(reply1 + "\n"), (reply1, r.stdout)
    rest = r.stdout[len(reply1) + 1:]
    assert rest.strip() and rest.endswith("\n")
    # /reset: the third prompt has no trace of the first two turns.
    assert "[conversation forgotten]" in r.stderr
    assert first not in p[2] and second not in p[2] and third in p[2]
    assert r.stderr.count("history 1 turn") == 2 and "history 2 turns" in r.stderr


def test_chat_drops_oldest_turns_when_the_context_is_full():
    lines = [f"Tell me about the number {i}, and repeat this sentence twice please." for i in range(1, 6)]
    r = vattn(["chat", "--temperature", "0", "--max-tokens", "16", "--max-context", "160", "--show-prompt"],
              stdin="\n".join(lines) + "\n/quit\nthis line is never read\n")
    assert r.returncode == 0, r.stderr
    assert re.search(r"outgrew the context of 160 tokens: forgot the oldest \d+ turns?", r.stderr), r.stderr
    p = prompts(r.stderr)
    assert len(p) == 5  # /quit stopped before the last line
    assert lines[0] not in p[-1] and lines[-1] in p[-1]
    for n in re.findall(r"\[prompt, (\d+) tokens\]", r.stderr):
        assert int(n) <= 160 - 16


def test_chat_too_long_message_is_refused_not_fatal():
    r = vattn(["chat", "--temperature", "0", "--max-tokens", "8", "--max-context", "128"],
              stdin=("word " * 400) + "\nHi\n")
    assert r.returncode == 0, r.stderr
    assert "the message is too long" in r.stderr
    assert r.stdout.strip()  # the next line was still answered


def test_chat_rejects_max_tokens_that_leave_no_room():
    r = vattn(["chat", "--max-tokens", "500", "--max-context", "256"])
    assert r.returncode != 0
    assert "leaves no room" in r.stderr


def test_demo_is_the_default_command():
    r = vattn(["--requests", "3", "--max-tokens", "6", "--live", "2"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()  # the live answer
    for needle in ("3 chat requests submitted at once", "Request 2, live", "Summary — 3 requests",
                   "throughput", "tok/s", "first token p50", "reserved", "peak mapped", "peak used", "wasted",
                   "ahead of time by the background thread", "on the critical path", "preemptions"):
        assert needle in r.stderr, needle
    rows = re.findall(r"^\s+(\d)\s+(\d+)\s+(\d+)\s+\d+ ms\s+(stop|length)", r.stderr, re.M)
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert all(1 <= int(row[2]) <= 6 for row in rows)
    used_now = re.search(r"now: mapped [^,]+, used ([^,]+),", r.stderr)
    assert used_now and used_now.group(1) == "0 B"  # every request gave its tokens back


def test_backend_cuda_fails_clearly():
    if EXPECT_GPU:
        pytest.skip("VATTN_EXPECT_GPU=1: a GPU is present, so --backend cuda does not fail")
    r = vattn(["demo", "--backend", "cuda", "--requests", "1"], extra=False)
    assert r.returncode != 0
    assert "--backend cuda" in r.stderr and "no usable CUDA driver" in r.stderr


def test_help_lists_demo_and_chat():
    r = vattn(["--help"], extra=False)
    assert r.returncode == 0
    assert re.search(r"demo \(default\)", r.stdout) and "chat" in r.stdout


# Hostile input (issue 14): every bad value is a clear error and a non-zero exit status — a signal shows as a negative
# returncode in Python, so each check asserts > 0 — and nothing hangs (every run has a timeout).

def refused(args, needle, timeout=120):
    r = vattn(args, timeout=timeout, extra=False)
    assert r.returncode > 0, (r.returncode, r.stderr[-2000:])
    assert needle in r.stderr, r.stderr[-2000:]
    return r


@pytest.mark.parametrize("args,needle", [
    (["bench", "serve", "--requests", "0"], "--requests must be at least 1"),
    (["bench", "alloc", "--steps", "0"], "--steps must be at least 1"),
    (["bench", "alloc", "--slots", "0"], "--slots must be between"),
    (["bench", "alloc", "--max-context", "1"], "--max-context must be between 2"),
    (["generate", "--token-budget", "0", "hi"], "--token-budget must be between"),
    (["generate", "--max-tokens", "0", "hi"], "--max-tokens must be at least 1"),
    (["generate", "--kv-mib", "0", "hi"], "--kv-mib must be between"),
    (["generate", "--slots", "0", "hi"], "--slots must be between"),
    (["generate", "--temperature", "nan", "hi"], "--temperature must be"),
    (["serve", "--port", "70000"], "--port must be between 1 and 65535"),
    (["serve", "--port", "0"], "--port must be between 1 and 65535"),
])
def test_out_of_range_options_are_refused(args, needle):
    refused(args, needle, timeout=60)


def test_max_context_past_the_models_is_refused():
    refused(["generate", "--max-context", "100000", "--max-tokens", "1", "hi"], "context length is 8192")


def test_kv_pool_smaller_than_the_context_lowers_it_with_a_note():
    r = vattn(["generate", "--kv-mib", "8", "--slots", "8", "--max-tokens", "3", "--temperature", "0", "Hi"])
    assert r.returncode == 0, r.stderr
    # SmolLM2 on the CPU: 8 MiB hold 170 tokens (on a GPU, with 2 MB pages, 364).
    m = re.search(r"max context lowered from 2048 to (\d+) ", r.stderr)
    assert m, r.stderr
    context = int(m.group(1))
    assert 16 <= context < 2048
    # A prompt the pool cannot hold is an error, not a hang.
    r = vattn(["generate", "--raw", "--kv-mib", "8", "--slots", "8", "--max-tokens", "3", "word " * (context + 10)],
              timeout=120)
    assert r.returncode > 0 and str(context) in r.stderr, r.stderr[-2000:]


def test_kv_budget_too_small_for_any_request_is_refused():
    refused(["generate", "--kv-mib", "3", "--max-tokens", "1", "hi"], "budget")


def test_serve_on_a_port_in_use_says_so_before_loading():
    import socket
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        start = time.monotonic()
        r = refused(["serve", "--port", str(port)], "already in use", timeout=60)
        assert f"127.0.0.1:{port}" in r.stderr
        assert "vattn serve: model" not in r.stderr  # it never got as far as serving
        assert time.monotonic() - start < 30


def _chat(*flags):
    import subprocess as sp
    return sp.Popen([BIN, "chat", "--temperature", "0", "--max-tokens", "1500", *flags, *EXTRA_ARGS],
                    stdin=sp.PIPE, stdout=sp.PIPE, stderr=sp.PIPE)


def _wait_for(stream, needle: bytes, timeout=180):
    """Reads `stream` (a pipe) until `needle` appears; returns what was read."""
    import select
    import time
    seen, end = b"", time.monotonic() + timeout
    while needle not in seen:
        left = end - time.monotonic()
        assert left > 0, f"{needle!r} never came: {seen[-500:]!r}"
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            chunk = os.read(stream.fileno(), 4096)
            assert chunk, f"EOF before {needle!r}: {seen[-500:]!r}"
            seen += chunk
    return seen


def test_chat_ctrl_c_stops_the_reply_and_the_chat_goes_on():
    import signal
    p = _chat()
    try:
        p.stdin.write(b"Write a very long story about a dragon, with many chapters.\n")
        p.stdin.flush()
        _wait_for(p.stdout, b" ")  # the reply is streaming
        p.send_signal(signal.SIGINT)
        early = _wait_for(p.stderr, b"[stopped by Ctrl-C]")
        out, err = p.communicate(b"Say hello.\n", timeout=240)
    finally:
        p.kill()
    err = (early + err).decode()
    assert p.returncode == 0, err[-2000:]
    assert err.count(" tokens in ") == 2, err  # the stopped reply, then the next line's whole one
    assert out.strip(), "the next line was answered"


def test_chat_ctrl_c_at_the_prompt_exits_cleanly():
    import signal
    p = _chat("--max-tokens", "4")
    try:
        p.stdin.write(b"Hi\n")
        p.stdin.flush()
        _wait_for(p.stderr, b" tokens in ")  # the reply is done: the chat waits for the next line
        p.send_signal(signal.SIGINT)
        # Standard input stays open: leaving must come from the Ctrl-C, not from the end of input.
        err = _wait_for(p.stderr, b"[Ctrl-C: bye]", timeout=30)
        status = p.wait(timeout=30)
    finally:
        p.kill()
    assert status == 0, err.decode()[-2000:]


def test_chat_second_ctrl_c_during_a_reply_exits():
    import signal
    import time
    p = _chat()
    try:
        p.stdin.write(b"Write a very long story about a dragon, with many chapters.\n")
        p.stdin.flush()
        _wait_for(p.stdout, b" ")
        p.send_signal(signal.SIGINT)
        time.sleep(0.05)  # two signals sent at once merge into one (standard signals do not queue)
        p.send_signal(signal.SIGINT)
        # Standard input stays open: leaving must come from the second Ctrl-C, not from the end of input (closing
        # it at once raced the signal on the H200 and sometimes won).
        err = _wait_for(p.stderr, b"bye", timeout=30)
        status = p.wait(timeout=30)
    finally:
        p.kill()
    # Either both came before the loop looked (exit at once, 130) or the first stopped the reply and the second
    # reached the prompt (exit 0): a clean exit with a message either way, never death by the signal.
    assert status in (0, 130), (status, err.decode()[-2000:])
