#!/usr/bin/env bash
# After scripts/gpu/stage.sh has staged .stage/smollm2.part-aa and part-ab (scripts/gpu/pack.sh; one call each, or
# carry part-ab with this call: it runs stage.sh first), carry .gpu (vattn.gz from build.sh).
# Joins the model, checks the CUDA model against the HF fixtures, then benches serving on the GPU.
# Writes logs under $OUT; prints a short table last. SKIP_BENCH=1 runs the checks only.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
MODEL=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
timeout 120 scripts/gpu/stage.sh
[ -f "$MODEL" ] || timeout 60 cat /tmp/stage/smollm2.part-aa /tmp/stage/smollm2.part-ab > "$MODEL"
sha256sum "$MODEL" | tee "$OUT/model.sha256"
BIN=/tmp/vattn
gunzip -c .gpu/vattn.gz > $BIN && chmod +x $BIN
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
{
  echo "date: $(date -u +%FT%TZ)"; echo "commit: $(cat .gpu/COMMIT)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} | tee "$OUT/env.txt"
status=0
$BIN check model --model "$MODEL" > "$OUT/check-model.log" 2>&1 || status=1
if [ -z "${SKIP_BENCH:-}" ]; then
  for kv in vattention paged; do
    $BIN bench serve --backend cuda --model "$MODEL" --kv $kv --slots 64 --max-context 2048 --token-budget 2048 \
      --requests 256 --json "$OUT/bench-serve-smollm2-$kv.json" > "$OUT/bench-serve-smollm2-$kv.log" 2>&1 || status=1
  done
fi
echo "== summary =="
grep -E "PASS|FAIL|engine:|model:" "$OUT/check-model.log"
tail -3 "$OUT/check-model.log"
for f in "$OUT"/bench-serve-*.log; do [ -f "$f" ] && { echo "-- $f"; tail -12 "$f"; }; done
exit $status
