#!/usr/bin/env bash
# Same-run A/B of two vattn builds' decode kernels on the GPU machine: A = .gpu-prev/vattn.gz, B = .gpu/vattn.gz
# (both carried). `vattn check attention` runs with B first (CHECK=0 skips it); then `vattn bench attention` alternates
# A and B for PASSES passes (default 2) with ARGS_A / ARGS_B (default: SHAPES, contiguous-perLayer, 3 stages).
# Logs in $OUT; the graph µs of every row last, one line per (pass, binary, row).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
gunzip -c .gpu-prev/vattn.gz > /tmp/vattn-a && gunzip -c .gpu/vattn.gz > /tmp/vattn-b && chmod +x /tmp/vattn-a /tmp/vattn-b
SHAPES=${SHAPES:-1x32768,16x8192,64x4096,128x2048,256x1024}
COMMON="--shapes $SHAPES --storages ${STORAGES:-contiguous-perLayer} --stages 3"
ARGS_A=${ARGS_A:-$COMMON}
ARGS_B=${ARGS_B:-$COMMON}
status=0
{ echo "date: $(date -u +%FT%TZ)"; echo "A: $(cat .gpu-prev/COMMIT 2>/dev/null), B: $(cat .gpu/COMMIT 2>/dev/null)"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } | tee "$OUT/env.txt"
if [ "${CHECK:-1}" = 1 ]; then
  timeout 200 /tmp/vattn-b check attention > "$OUT/check-attention.log" 2>&1 || status=1
  grep -c PASS "$OUT/check-attention.log"; grep FAIL "$OUT/check-attention.log" | head; tail -1 "$OUT/check-attention.log"
fi
for p in $(seq 1 "${PASSES:-2}"); do
  for v in a b; do
    args=$([ $v = a ] && echo "$ARGS_A" || echo "$ARGS_B")
    timeout 150 /tmp/vattn-$v bench attention $args > "$OUT/bench-$v-$p.log" 2>&1 || { status=1; tail -3 "$OUT/bench-$v-$p.log"; }
  done
done
for f in "$OUT"/bench-*.log; do
  grep -E "^  [0-9]+×" "$f" | sed -E "s/^  /$(basename "$f" .log) /; s/ \(p10–p90 spread [0-9.]*\)//; s/, [0-9]+ GB\/s, [0-9.]+ of copy//g; s/ \(spread [0-9.]*\)//"
done
exit $status
