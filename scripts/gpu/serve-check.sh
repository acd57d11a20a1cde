#!/usr/bin/env bash
# The product test on the GPU machine: the Python tests CI runs on the CPU, against `vattn serve|demo|chat --backend
# cuda` with the real SmolLM2 — tests/openai_client_test.py (the official openai client) and a shortened
# tests/soak_test.py (mixed requests with client disconnects, then leak checks) for each KV mode in $KVS, then
# tests/hostile_client_test.py and tests/cli_test.py once.
# Carry (calls back to back while the machine is warm, each at most 64 MiB; scripts/gpu/pack.sh prepares them):
#   1. .stage/smollm2.part-aa                  bash scripts/gpu/stage.sh
#   2. .stage/smollm2.part-ab .whl             bash scripts/gpu/stage.sh
#   3. .gpu/vattn.gz .gpu/COMMIT               bash scripts/gpu/serve-check.sh
# (this runs stage.sh first, so what this call carries under .stage/ or .whl/ is staged too; once the model is in
# ~/.cache/vattn/models and the wheels in /tmp/stage/whl, later calls on the same machine need only .gpu).
# Knobs: OUT (./gpu-out), KVS ("vattention paged"), SOAK_REQUESTS (120), SOAK_KV_MIB_VATTENTION (48),
# SOAK_KV_MIB_PAGED (16), BUDGET_S (480: every step's timeout is cut to what is left of it), KEEP_LOGS=1 (keep the
# single logs in $OUT; by default only env.txt, summary.txt and serve-check.tgz stay: a call returns ≤ 8 files).
# Prints a summary table last (also $OUT/summary.txt); exit status 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
START=$(date +%s)
DEADLINE=$((START + ${BUDGET_S:-480}))
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
status=0
# shellcheck source=scripts/gpu/common.sh
. scripts/gpu/common.sh
KVS=${KVS:-vattention paged}
SOAK_REQUESTS=${SOAK_REQUESTS:-120}
# The soak's KV pool on the GPU (tests/soak_test.py, at KV_MIB, has the arithmetic): it must be smaller than 12 slots
# × 512 tokens so requests wait and get preempted as on the CPU. Mega layout, bf16, 2 MB pages: a request maps at
# least a K and a V page (182 tokens), so 48 MiB = 24 pages run the 12 short requests and any long one makes others
# wait (12 full slots would need 144 MiB). Paged, 16-token blocks of 360 KiB: 16 MiB = 45 blocks (720 tokens; 12 full
# slots 6,144). Either way the pool holds one request of the whole context (512 tokens): a request that can never
# fit would wait for ever.
SOAK_KV_MIB_VATTENTION=${SOAK_KV_MIB_VATTENTION:-48}
SOAK_KV_MIB_PAGED=${SOAK_KV_MIB_PAGED:-16}

# count WHAT LINE: the number before WHAT in pytest's last line ("1 failed, 13 passed in 20.1s"), or nothing.
count() { echo "$2" | grep -oE "[0-9]+ $1" | head -1 | cut -d' ' -f1; }

# The summary table (console and summary.txt), one archive of every log, then exit with $status.
finish() {
  local name rc secs kind kv last passed failed errors skipped
  {
    echo "== serve-check summary (commit $(cat /tmp/vattn.commit 2>/dev/null || echo '?'), $(($(date +%s) - START)) s)"
    printf '%-22s %-11s %6s %6s %6s %7s %12s %5s\n' step kv passed failed errors skipped rc s
    while IFS=$'\t' read -r name rc secs; do
      kind=${name%%-*} kv=${name#*-}
      [ "$kv" = "$name" ] && kv=-
      case $kind in
        openai) kind=openai_client_test.py ;; soak) kind=soak_test.py ;; cli) kind=cli_test.py ;;
        shutdown) kind=shutdown_test.py ;; hostile) kind=hostile_client_test.py ;;
      esac
      last=$(grep -E '^=*[ ]*[0-9]+ (passed|failed|errors?|skipped|deselected)|^=* *no tests ran' \
        "$OUT/$name.log" 2>/dev/null | tail -1)
      passed=$(count passed "$last"); failed=$(count failed "$last"); errors=$(count 'errors?' "$last")
      skipped=$(count skipped "$last")
      case $rc in 124|137) rc="$rc(timeout)" ;; esac
      printf '%-22s %-11s %6s %6s %6s %7s %12s %5s\n' "$kind" "$kv" "${passed:--}" "${failed:--}" "${errors:--}" \
        "${skipped:--}" "$rc" "$secs"
    done < "$STEPS"
    echo "result: $([ "$status" -eq 0 ] && echo PASS || echo FAIL)"
  } > "$OUT/summary.txt"
  pack_logs serve-check.tgz
  cat "$OUT/summary.txt"
  exit "$status"
}

record_env "KVS: $KVS; SOAK_REQUESTS: $SOAK_REQUESTS; soak KV MiB: vattention $SOAK_KV_MIB_VATTENTION, paged $SOAK_KV_MIB_PAGED"
# What earlier calls staged, plus anything this call carries.
step stage 120 scripts/gpu/stage.sh || note "stage.sh failed"
unpack_vattn || { status=1; finish; }
ensure_smollm2 || { status=1; finish; }
python_wheels pytest || { status=1; finish; }

# Compile the kernels into VATTN_KERNEL_CACHE first (NVRTC, up to a minute cold), so the tests' servers start
# within their wait for /health; also the first sign of whether the GPU path works at all.
for kv in $KVS; do
  step "warmup-$kv" 180 $BIN generate --backend cuda --kv "$kv" --max-tokens 8 --temperature 0 "Say hello." \
    || note "warm-up with --kv $kv failed"
done
export VATTN_START_TIMEOUT=${VATTN_START_TIMEOUT:-120}

for kv in $KVS; do
  case $kv in paged) kv_mib=$SOAK_KV_MIB_PAGED ;; *) kv_mib=$SOAK_KV_MIB_VATTENTION ;; esac
  step "openai-$kv" 150 env VATTN_BIN=$BIN VATTN_SERVE_ARGS="--backend cuda --kv $kv" \
    python3 -m pytest -q -p no:cacheprovider tests/openai_client_test.py
  step "shutdown-$kv" 90 env VATTN_BIN=$BIN VATTN_SERVE_ARGS="--backend cuda --kv $kv" \
    python3 -m pytest -q -p no:cacheprovider tests/shutdown_test.py
  step "soak-$kv" 200 env VATTN_BIN=$BIN VATTN_SERVE_ARGS="--backend cuda --kv $kv" SOAK_REQUESTS="$SOAK_REQUESTS" \
    SOAK_KV_MIB="$kv_mib" python3 -m pytest -q -s -p no:cacheprovider tests/soak_test.py
done
step hostile 150 env VATTN_BIN=$BIN VATTN_SERVE_ARGS="--backend cuda" \
  python3 -m pytest -q -s -p no:cacheprovider tests/hostile_client_test.py
step cli 200 env VATTN_BIN=$BIN VATTN_ARGS="--backend cuda" VATTN_EXPECT_GPU=1 \
  python3 -m pytest -q -rs -p no:cacheprovider tests/cli_test.py
finish
