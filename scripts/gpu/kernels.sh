#!/usr/bin/env bash
# Attention kernels in one call on the GPU machine: correctness checks, then the benches, a short table last.
# PARTS (default "decode prefill"): decode = vattn check attention + bench attention (CUDA-core vs tensor-core
# arithmetic, pipeline depths, merge with/without programmatic dependent launch); prefill = vattn check prefill +
# bench prefill. Extra bench flags: DECODE_ARGS, PREFILL_ARGS. Expects .gpu/vattn(.gz). Logs in $OUT/kernels.tgz.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
W=${W:-/tmp/kernels-out}
mkdir -p "$OUT" "$W"
[ -x .gpu/vattn ] || { gunzip -c .gpu/vattn.gz > /tmp/vattn && chmod +x /tmp/vattn; }
BIN=${BIN:-$( [ -x .gpu/vattn ] && echo .gpu/vattn || echo /tmp/vattn )}
PARTS=${PARTS:-decode prefill}
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
pack() { tar czf "$OUT/kernels.tgz" -C "$W" . 2>/dev/null; }
t0=$(date +%s)
stamp() { pack; echo "[$(( $(date +%s) - t0 )) s] $*"; }
status=0
{ echo "date: $(date -u +%FT%TZ)"; echo "commit: $(cat .gpu/COMMIT)"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader
  ls /usr/local/cuda/bin 2>/dev/null | tr '\n' ' '; echo; } | tee "$W/env.txt"
for part in $PARTS; do
  case $part in
  decode)
    stamp "vattn check attention"
    timeout 300 $BIN check attention > "$W/check-attention.log" 2>&1 || status=1
    grep -E "^(PASS|FAIL)|FAIL" "$W/check-attention.log" | tail -5
    stamp "vattn bench attention ${DECODE_ARGS:-}"
    timeout 300 $BIN bench attention --json "$W/bench-attention.json" ${DECODE_ARGS:-} > "$W/bench-attention.log" 2>&1 || status=1
    ;;
  prefill)
    stamp "vattn check prefill"
    timeout 300 $BIN check prefill > "$W/check-prefill.log" 2>&1 || status=1
    grep -E "^(PASS|FAIL)|FAIL" "$W/check-prefill.log" | tail -5
    stamp "vattn bench prefill ${PREFILL_ARGS:-}"
    timeout 300 $BIN bench prefill --json "$W/bench-prefill.json" ${PREFILL_ARGS:-} > "$W/bench-prefill.log" 2>&1 || status=1
    ;;
  ncu)  # Nsight Compute on one decode launch (64×4K, tensor cores) and one wgmma prefill launch (8K).
    stamp "ncu decode"
    timeout 300 ncu -k regex:decode_partial_tc_strided --launch-skip 8 --launch-count 1 --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
      $BIN bench attention --shapes 64x4096 --arithmetic tc --stages 3 --storages contiguous-perLayer --groups 2 \
      --calls-per-group 2 --graph-calls 0 > "$W/ncu-decode.txt" 2>&1 || status=1
    stamp "ncu prefill"
    timeout 300 ncu -k regex:prefill_bf16_d128_wg2n64b1_contig --launch-skip 30 --launch-count 1 --section SpeedOfLight \
      --section ComputeWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
      $BIN bench prefill > "$W/ncu-prefill.txt" 2>&1 || status=1
    ;;
  esac
done
stamp done
for f in "$W"/bench-attention.log "$W"/bench-prefill.log; do
  [ -f "$f" ] && { echo "== $(basename "$f")"; grep -E "^\|" "$f"; }
done
pack
exit $status
