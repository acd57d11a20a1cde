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
