#!/usr/bin/env python3
"""HTTP load generator for `vattn serve`, modelled on `vllm bench serve`.

It replays a trace of requests against a running OpenAI-compatible server through the official `openai` client
(`openai.AsyncOpenAI`, asyncio, streaming `/v1/completions`) and reports the serving metrics vLLM reports: completed
and failed requests, duration, request/output/total-token throughput, and mean / median / p90 / p99 of TTFT, TPOT,
ITL and end-to-end latency. The summary is printed in vLLM's block format and, with --json, written to a file.

    python3 bench/http/loadgen.py --base-url http://127.0.0.1:8000 --model smollm2-135m --trace trace.jsonl \\
        [--num-prompts N] [--request-rate inf|R] [--seed 0] [--max-concurrency C] [--json OUT.json] \\
        [--label TEXT] [--timeout 600] [--workers N]

The trace is JSON lines, one request per line: {"prompt_token_ids": [int, ...], "output_len": int}; other keys (such
as "prompt_len") are ignored. `vattn bench trace` writes such files.

Like `vllm bench serve`:
  * each request is a streamed completion with the prompt given as token ids, `max_tokens` = output_len,
    temperature 0, `ignore_eos` (vLLM's extension, sent through extra_body) and `stream_options.include_usage`, so
    every request generates exactly output_len tokens;
  * arrivals: --request-rate inf sends everything at once; a finite rate R is a Poisson process (exponential gaps of
    mean 1/R s between sends, the first request at once), seeded by --seed, as vLLM's `get_request`;
    --max-concurrency caps the requests in flight with a semaphore (a request waits for a slot after its arrival);
  * TTFT = send to first streamed chunk that carries a choice (its text may be "": dummy-weight models have no
    tokenizer); ITL = gaps between successive choice chunks, pooled over all requests; E2E latency = send to the last
    choice chunk; TPOT = (E2E - TTFT) / (output tokens - 1) for requests with more than one output token; output
    tokens = `usage.completion_tokens` of the final usage chunk (the number of choice chunks if absent);
  * duration runs from the first request sent to the last response finished; percentiles interpolate linearly
    (numpy's default), computed here without numpy.

Unlike it:
  * it samples nothing: it reads a pre-sampled token-id trace, so the offline `vattn bench` run and this HTTP run
    see exactly the same requests (no tokenizer, no dataset, no random prompts on this side);
  * no warm-up "initial test prompt" and no abort when it fails: every request counts, and a misconfigured run shows
    up as failed requests;
  * a request fails on an exception (connection error, timeout, non-200 status), on an SSE error event
    (`data: {"error": {...}}`, which the openai client raises as `openai.APIError` mid-stream), on a stream that
    carries no choice chunk, or on one that ends without a finish_reason (the engine stopped it); the first
    distinct error messages are printed and kept in the JSON, and the exit status is 1 if any request failed;
  * the client never retries (max_retries=0), and --timeout bounds each whole request, not just each read;
  * the requests are sent from --workers processes (default min(8, CPUs)), request i from worker i mod N, on one
    global arrival schedule (time.monotonic is shared by processes): a single Python process parsing every chunk
    through the openai client saturates a core near 8K chunks/s — on an H200 serving a Llama-3-8B shape it measured
    0.52x of the engine's own throughput, the client's limit, not the server's.
"""

import argparse
import asyncio
import concurrent.futures
import json
import math
import multiprocessing
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

import httpx
import openai


@dataclass
class TraceRequest:
    prompt_token_ids: List[int]
    output_len: int


@dataclass
class RequestResult:
    prompt_len: int
    output_len: int  # asked for
    success: bool = False
    ttft: float = 0.0  # s
    latency: float = 0.0  # s, send to last choice chunk
    itl: List[float] = field(default_factory=list)  # s
    output_tokens: int = 0
    finish_reason: Optional[str] = None
    error: str = ""


def load_trace(path: str, num_prompts: Optional[int]) -> List[TraceRequest]:
    requests: List[TraceRequest] = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: not a JSON object")
            ids, out = obj.get("prompt_token_ids"), obj.get("output_len")
            if (not isinstance(ids, list) or not ids
                    or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids)):
                raise ValueError(f"{path}:{n}: 'prompt_token_ids' must be a non-empty list of ints")
            if not isinstance(out, int) or isinstance(out, bool) or out < 1:
                raise ValueError(f"{path}:{n}: 'output_len' must be a positive int")
            requests.append(TraceRequest(ids, out))
            if num_prompts is not None and len(requests) == num_prompts:
                break
    if not requests:
        raise ValueError(f"{path}: no requests")
    if num_prompts is not None and len(requests) < num_prompts:
        raise ValueError(f"{path}: --num-prompts {num_prompts} but the trace holds only {len(requests)} requests")
    return requests


def percentile(values: List[float], p: float) -> float:
    """numpy.percentile(values, p) with the default 'linear' method."""
    s = sorted(values)
    if not s:
        raise ValueError("percentile of no values")
    x = (len(s) - 1) * p / 100.0
    lo = math.floor(x)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (x - lo)


def stats_ms(values_s: List[float]) -> dict:
    """mean, std (population, as numpy), median, p90, p99 in ms; nulls when there is no value."""
    if not values_s:
        return {"mean": None, "std": None, "median": None, "p90": None, "p99": None}
    v = [x * 1000.0 for x in values_s]
    mean = sum(v) / len(v)
    return {"mean": mean, "std": math.sqrt(sum((x - mean) ** 2 for x in v) / len(v)),
            "median": percentile(v, 50), "p90": percentile(v, 90), "p99": percentile(v, 99)}


def arrival_offsets(n: int, rate: float, rng: random.Random) -> List[float]:
    """vLLM's get_request as a schedule: request i is sent at offsets[i] s; the first at 0, then exponential gaps of
    mean 1/rate (all at 0 at rate inf)."""
    offsets, t = [], 0.0
    for _ in range(n):
        offsets.append(t)
        if not math.isinf(rate):
            t += rng.expovariate(rate)
    return offsets


def describe(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "TimeoutError: the request did not finish within --timeout"
    msg = str(e) or repr(e)
    if isinstance(e, openai.APIConnectionError) and e.__cause__ is not None:
        msg += f" ({type(e.__cause__).__name__}: {e.__cause__})"  # the client's own text is only "Connection error."
    return f"{type(e).__name__}: {msg}"


async def stream_one(client: openai.AsyncOpenAI, model: str, req: TraceRequest, res: RequestResult) -> None:
    start = time.perf_counter()
    last = start
    chunks = 0
    usage_tokens: Optional[int] = None
    stream = await client.completions.create(
        model=model, prompt=req.prompt_token_ids, max_tokens=req.output_len, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    async with stream:  # closes the response however the loop ends (error event, timeout)
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.choices:
                if chunks == 0:
                    res.ttft = now - start
                else:
                    res.itl.append(now - last)
                last = now
                chunks += 1
                for c in chunk.choices:
                    if c.finish_reason:
                        res.finish_reason = c.finish_reason
            if chunk.usage is not None and chunk.usage.completion_tokens is not None:
                usage_tokens = chunk.usage.completion_tokens
    if chunks == 0:
        raise RuntimeError("the stream carried no choice chunk")
    if res.finish_reason is None:
        raise RuntimeError("the stream ended without a finish_reason (the request was ended before it finished)")
    res.latency = last - start
    res.output_tokens = usage_tokens if usage_tokens is not None else chunks
    res.success = True


async def run_one(client, model, req, timeout, sem) -> RequestResult:
    res = RequestResult(prompt_len=len(req.prompt_token_ids), output_len=req.output_len)
    try:
        if sem is None:
            await asyncio.wait_for(stream_one(client, model, req, res), timeout)
        else:
            async with sem:
                await asyncio.wait_for(stream_one(client, model, req, res), timeout)
    except Exception as e:  # noqa: BLE001 - every failure is a failed request, kept with its message
        res.success = False
        res.error = describe(e)
    return res


async def run_worker(args, requests: List[TraceRequest], offsets: List[float], t0: float, concurrency: Optional[int]):
    """Sends `requests` at t0 + their offsets (time.monotonic, the same clock in every worker process), at most
    `concurrency` in flight; returns their results and when the last one finished."""
    in_flight = concurrency or len(requests)
    http_client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight),
        timeout=httpx.Timeout(args.timeout))
    base = args.base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    client = openai.AsyncOpenAI(base_url=base, api_key="EMPTY", max_retries=0, timeout=args.timeout,
                                http_client=http_client)
    sem = asyncio.Semaphore(concurrency) if concurrency else None
    tasks = []
    try:
        for r, offset in zip(requests, offsets):
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(run_one(client, args.model, r, args.timeout, sem)))
        results = await asyncio.gather(*tasks)
        end = time.monotonic()
    finally:
        await client.close()
        await http_client.aclose()
    return results, end


def worker_main(args, requests, offsets, t0, concurrency):
    return asyncio.run(run_worker(args, requests, offsets, t0, concurrency))


def benchmark(args, requests: List[TraceRequest]):
    """Runs the trace from --workers processes (request i from worker i mod N, each on its own event loop: one Python
    process parsing every streamed chunk through the openai client tops out near 8K chunks/s, below what one GPU
    serves); the arrival schedule is global, so the load is the same for any N. Returns (results in trace order,
    duration)."""
    offsets = arrival_offsets(len(requests), args.request_rate, random.Random(args.seed))
    n = min(args.workers, len(requests), args.max_concurrency or len(requests))
    # --max-concurrency C is split over the workers, so C stays the bound on requests in flight.
    caps = [None] * n if not args.max_concurrency else \
        [args.max_concurrency // n + (1 if w < args.max_concurrency % n else 0) for w in range(n)]
    t0 = time.monotonic() + (0.5 if n > 1 else 0.0)  # the workers' start-up happens before the first send
    if n == 1:
        results, end = worker_main(args, requests, offsets, t0, caps[0])
        return results, end - t0
    parts = [(requests[w::n], offsets[w::n]) for w in range(n)]
    with concurrent.futures.ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(worker_main, args, reqs, offs, t0, caps[w]) for w, (reqs, offs) in enumerate(parts)]
        outcomes = [f.result() for f in futures]
    results: List[RequestResult] = [None] * len(requests)  # type: ignore[list-item]
    for w, (part, _) in enumerate(outcomes):
        results[w::n] = part
    return results, max(end for _, end in outcomes) - t0


def summarize(args, results: List[RequestResult], duration: float) -> dict:
    ok = [r for r in results if r.success]
    ttfts = [r.ttft for r in ok]
    e2els = [r.latency for r in ok]
    itls = [x for r in ok for x in r.itl]
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    errors: List[str] = []
    for r in results:
        if not r.success and r.error not in errors:
            errors.append(r.error)
    return {
        "label": args.label,
        "base_url": args.base_url,
        "model": args.model,
        "num_prompts": len(results),
        "request_rate": "inf" if math.isinf(args.request_rate) else args.request_rate,
        "workers": min(args.workers, len(results), args.max_concurrency or len(results)),
        "max_concurrency": args.max_concurrency,
        "seed": args.seed,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "duration_s": duration,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "expected_output_tokens": sum(r.output_len for r in ok),
        "request_throughput": len(ok) / duration if duration > 0 else 0.0,
        "output_throughput": total_out / duration if duration > 0 else 0.0,
        "total_token_throughput": (total_in + total_out) / duration if duration > 0 else 0.0,
        "ttft_ms": stats_ms(ttfts),
        "tpot_ms": stats_ms(tpots),
        "itl_ms": stats_ms(itls),
        "e2el_ms": stats_ms(e2els),
        "errors": errors[:10],
    }


def print_summary(s: dict) -> None:
    def num(v, fmt="{:.2f}"):
        return "n/a" if v is None else fmt.format(v)

    title = " Serving Benchmark Result " + (f"({s['label']}) " if s["label"] else "")
    print("{s:{c}^{n}}".format(s=title, n=50, c="="))
    rows = [
        ("Successful requests:", s["completed"], "{}"),
        ("Failed requests:", s["failed"], "{}"),
        ("Request rate configured (RPS):", s["request_rate"], "{}"),
        ("Maximum request concurrency:", s["max_concurrency"], "{}"),
        ("Benchmark duration (s):", s["duration_s"], "{:.2f}"),
        ("Total input tokens:", s["total_input_tokens"], "{}"),
        ("Total generated tokens:", s["total_output_tokens"], "{}"),
        ("Expected generated tokens:", s["expected_output_tokens"], "{}"),
        ("Request throughput (req/s):", s["request_throughput"], "{:.2f}"),
        ("Output token throughput (tok/s):", s["output_throughput"], "{:.2f}"),
        ("Total Token throughput (tok/s):", s["total_token_throughput"], "{:.2f}"),
    ]
    for name, v, fmt in rows:
        print("{:<40} {:<10}".format(name, "none" if v is None else fmt.format(v)))
    for key, name, header in [("ttft_ms", "TTFT", "Time to First Token"),
                              ("tpot_ms", "TPOT", "Time per Output Token (excl. 1st token)"),
                              ("itl_ms", "ITL", "Inter-token Latency"),
                              ("e2el_ms", "E2EL", "End-to-end Latency")]:
        st = s[key]
        print("{s:{c}^{n}}".format(s=header, n=50, c="-"))
        print("{:<40} {:<10}".format(f"Mean {name} (ms):", num(st["mean"])))
        print("{:<40} {:<10}".format(f"Median {name} (ms):", num(st["median"])))
        print("{:<40} {:<10}".format(f"P90 {name} (ms):", num(st["p90"])))
        print("{:<40} {:<10}".format(f"P99 {name} (ms):", num(st["p99"])))
    print("=" * 50)
    if s["errors"]:
        print(f"First errors ({min(len(s['errors']), 5)} distinct shown):", file=sys.stderr)
        for e in s["errors"][:5]:
            print("  " + e, file=sys.stderr)


def parse_rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (use inf or a positive number)") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"the request rate must be positive or inf, got {text}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Replay a token-id trace against an OpenAI-compatible server "
                                            "(`vattn serve`) and report serving metrics, like `vllm bench serve`.")
    p.add_argument("--base-url", required=True, help="server root, e.g. http://127.0.0.1:8000 (/v1 is appended)")
    p.add_argument("--model", required=True, help="model name the server serves (see /v1/models)")
    p.add_argument("--trace", required=True, help='JSON lines: {"prompt_token_ids": [...], "output_len": N}')
    p.add_argument("--num-prompts", type=positive_int, default=None, help="first N requests of the trace (default all)")
    p.add_argument("--request-rate", type=parse_rate, default=math.inf,
                   help="requests/s of a Poisson arrival process, or inf: all at once (default inf)")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrival process (default 0)")
    p.add_argument("--max-concurrency", type=positive_int, default=None,
                   help="most requests in flight at once (default: no limit)")
    p.add_argument("--json", default=None, help="write the summary to this JSON file")
    p.add_argument("--label", default="", help="free text stored with the result")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds each request may take (default 600)")
    p.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1),
                   help="client processes sharing the trace (default: min(8, CPUs)); one Python process caps the "
                        "chunks per second it can read")
    args = p.parse_args(argv)
    if not args.timeout > 0:
        p.error("--timeout must be positive")
    try:
        requests = load_trace(args.trace, args.num_prompts)
    except (OSError, ValueError) as e:
        p.error(str(e))

    results, duration = benchmark(args, requests)
    summary = summarize(args, results, duration)
    print_summary(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
