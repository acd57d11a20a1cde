#!/usr/bin/env bash
# Same-run A/B of two vattn builds in the engine: `vattn bench decode` (Llama-3-8B shape, dummy bf16 weights, CUDA
# graphs, vAttention per-layer KV) at 1K context (batch 1, 16, 64) and 16K (batch 1, 16), A = .gpu-prev/vattn.gz and
# B = .gpu/vattn.gz alternating for PASSES passes (default 2). Logs in $OUT; step ms per (context, pass, binary) last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
gunzip -c .gpu-prev/vattn.gz > /tmp/vattn-a && gunzip -c .gpu/vattn.gz > /tmp/vattn-b && chmod +x /tmp/vattn-a /tmp/vattn-b
{ echo "date: $(date -u +%FT%TZ)"; echo "A: $(cat .gpu-prev/COMMIT), B: $(cat .gpu/COMMIT)"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } | tee "$OUT/env.txt"
status=0
for p in $(seq 1 "${PASSES:-2}"); do
  for v in a b; do
    /tmp/vattn-$v bench decode --kv vattention --context 1024 --batches 1,16,64 > "$OUT/d1k-$v-$p.log" 2>&1 || status=1
    /tmp/vattn-$v bench decode --kv vattention --context 16384 --batches 1,16 > "$OUT/d16k-$v-$p.log" 2>&1 || status=1
  done
done
for f in "$OUT"/d*k-*.log; do grep -E "^vattention" "$f" | awk -v n="$(basename "$f" .log)" '{print n, "batch", $2, "step ms p50", $3}'; done
exit $status
