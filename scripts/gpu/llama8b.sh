#!/usr/bin/env bash
# Llama-3-8B-shaped (dummy bf16 weights) on the GPU: decode throughput vs batch at 16K (vAttention vs paged),
# prefill throughput vs prompt length, offline serving (ShareGPT-like and arXiv-like). Carry .gpu/vattn.gz +
# .gpu/COMMIT. Logs/JSON under $OUT; a short table last. PARTS="decode prompt serve" picks parts.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
BIN=/tmp/vattn
[ -x $BIN ] && [ "$(cat /tmp/vattn.commit 2>/dev/null)" = "$(cat .gpu/COMMIT)" ] || {
  gunzip -c .gpu/vattn.gz > $BIN && chmod +x $BIN && cp .gpu/COMMIT /tmp/vattn.commit; }
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
SHAPE=${SHAPE:-llama-3-8b}
PARTS=${PARTS:-decode prompt serve}
{
  echo "date: $(date -u +%FT%TZ)"; echo "commit: $(cat .gpu/COMMIT)"; echo "shape: $SHAPE"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} | tee "$OUT/env.txt"
# vattention = per-layer layout (the paper's), vattention-mega = one tensor for all layers, paged = block tables.
kv_args() {
  case $1 in
    vattention-mega) echo "--kv vattention --layout mega" ;;
    vattention) echo "--kv vattention --layout perLayer" ;;
    *) echo "--kv $1" ;;
  esac
}
status=0
for part in $PARTS; do
  case $part in
    decode)
      $BIN bench decode --shape $SHAPE --context 16384 --batches 1,2,4,8,16,24,32 \
        --json "$OUT/decode-$SHAPE.json" > "$OUT/decode-$SHAPE.log" 2>&1 || status=1 ;;
    prompt)
      $BIN bench prompt --shape $SHAPE --kv vattention,paged-16 --lengths 2048,8192,32768,65536 --chunks 0,2048 \
        --json "$OUT/prompt-$SHAPE.json" > "$OUT/prompt-$SHAPE.log" 2>&1 || status=1 ;;
    mapping)
      $BIN bench mapping --shape $SHAPE --batch ${MAP_BATCH:-16} --context ${MAP_CONTEXT:-16384} --steps ${MAP_STEPS:-1536} \
        --json "$OUT/mapping-$SHAPE.json" > "$OUT/mapping-$SHAPE.log" 2>&1 || status=1 ;;
    online)
      for r in ${RATES:-8 16 32}; do
        for kv in ${KVS:-vattention vattention-mega paged}; do
          args=$(kv_args $kv)
          $BIN bench serve --backend cuda --dummy-weights --model $SHAPE $args --slots 256 --max-context 4096 \
            --token-budget 2048 --workload sharegpt --requests ${ONLINE_REQUESTS:-400} --rate $r \
            --json "$OUT/online-$SHAPE-$r-$kv.json" > "$OUT/online-$SHAPE-$r-$kv.log" 2>&1 || status=1
        done
      done ;;
    serve)
      for w in ${WORKLOADS:-sharegpt arxiv}; do
        for kv in ${KVS:-vattention vattention-mega paged}; do
          args=$(kv_args $kv)
          $BIN bench serve --backend cuda --dummy-weights --model $SHAPE $args --slots 256 --max-context 4096 \
            --token-budget 2048 --workload $w --requests ${REQUESTS:-1000} \
            --json "$OUT/serve-$SHAPE-$w-$kv.json" > "$OUT/serve-$SHAPE-$w-$kv.log" 2>&1 || status=1
        done
      done ;;
  esac
done
echo "== summary =="
for f in "$OUT"/decode-*.log "$OUT"/prompt-*.log "$OUT"/mapping-*.log; do [ -f "$f" ] && { echo "-- $f"; grep -v "^  " "$f" | tail -30; }; done
for f in "$OUT"/serve-*.log "$OUT"/online-*.log; do [ -f "$f" ] && { echo "-- $f"; grep -E "requests/s|TTFT|KV mean|KV maps" "$f"; }; done
# Everything in one archive too (a run returns only a few files).
tar czf /tmp/all.tgz -C "$OUT" . && mv /tmp/all.tgz "$OUT/all.tgz"
exit $status
