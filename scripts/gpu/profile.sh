#!/usr/bin/env bash
# Where a Llama-3-8B-shaped decode step spends its time (vAttention vs paged): per-phase CUDA-event timing
# (plain launches), then the same points with CUDA graphs. Carry .gpu/vattn.gz + .gpu/COMMIT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
BIN=/tmp/vattn
gunzip -c .gpu/vattn.gz > $BIN && chmod +x $BIN
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
{ echo "date: $(date -u +%FT%TZ)"; echo "commit: $(cat .gpu/COMMIT)"; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } | tee "$OUT/env.txt"
# No Nsight Systems on the machine: the model times its own phases with CUDA events (plain launches).
$BIN bench decode --shape ${SHAPE:-llama-3-8b} --context 16384 --batches 1,16 --kv vattention,paged-16 --steps 32 --profile \
  --disable-cuda-graphs --json "$OUT/profile-decode.json" > "$OUT/profile-decode.log" 2>&1
status=$?
$BIN bench decode --shape ${SHAPE:-llama-3-8b} --context 16384 --batches 1,16 --kv vattention,paged-16 --steps 32 \
  --json "$OUT/graphs-decode.json" > "$OUT/graphs-decode.log" 2>&1 || status=1
cat "$OUT/profile-decode.log" "$OUT/graphs-decode.log"
exit $status
