#!/usr/bin/env bash
# Runs every GPU check and benchmark in one go on the GPU machine. Expects .gpu/vattn (scripts/gpu/build.sh) and
# writes logs and JSON under $OUT (or ./gpu-out). CHECKS_ONLY=1 skips the benchmarks. Prints a short table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
BIN=.gpu/vattn
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
status=0
{
  echo "date: $(date -u +%FT%TZ)"; echo "commit: $(git rev-parse --short HEAD 2>/dev/null || cat .gpu/COMMIT)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} | tee "$OUT/env.txt"
for check in cuda attention prefill; do
  $BIN check $check > "$OUT/check-$check.log" 2>&1 || status=1
done
if [ -z "${CHECKS_ONLY:-}" ]; then
  $BIN bench alloc --backend cuda --json "$OUT/bench-alloc-cuda.json" > "$OUT/bench-alloc-cuda.log" 2>&1 || status=1
  $BIN bench attention --json "$OUT/bench-attention.json" > "$OUT/bench-attention.log" 2>&1 || status=1
  $BIN bench prefill --json "$OUT/bench-prefill.json" > "$OUT/bench-prefill.log" 2>&1 || status=1
fi
echo "== summary =="
for check in cuda attention prefill; do
  echo "check $check: $(grep -cE '^ *PASS|PASS ' "$OUT/check-$check.log") PASS lines, $(grep -cE 'FAIL' "$OUT/check-$check.log") FAIL lines; $(tail -1 "$OUT/check-$check.log")"
done
[ -f "$OUT/bench-alloc-cuda.log" ] && sed -n '/Decode growth/,/crit =/p' "$OUT/bench-alloc-cuda.log"
exit $status
