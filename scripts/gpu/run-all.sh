#!/usr/bin/env bash
# Runs every GPU check and benchmark in one go on the GPU machine. Expects .gpu/vattn (scripts/gpu/build.sh) and
# writes logs and JSON under $OUT (or ./gpu-out). Prints a short table last.
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
$BIN check cuda 2>&1 | tee "$OUT/check-cuda.log" || status=1
$BIN bench alloc --backend cuda --json "$OUT/bench-alloc-cuda.json" "$@" 2>&1 | tee "$OUT/bench-alloc-cuda.log" || status=1
echo "== summary =="
grep -E "PASS|FAIL" "$OUT/check-cuda.log"
sed -n '/Decode growth/,/crit =/p' "$OUT/bench-alloc-cuda.log"
exit $status
