#!/usr/bin/env bash
# Attention kernels in one call on the GPU machine: correctness checks, then the benches, a short table last.
# PARTS (default "decode prefill"): decode = vattn check attention + bench attention; prefill = vattn check prefill +
# bench prefill; ncu = Nsight Compute on one launch of each. Extra bench flags: DECODE_ARGS, PREFILL_ARGS (e.g.
# DECODE_ARGS="--stages 2,3,4 --merge auto,separate"). Expects .gpu/vattn(.gz). Logs in $OUT/kernels.tgz.
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
# vattn check <what>, then vattn bench <what> with extra flags: logs check-<what>.log, bench-<what>.{log,json}.
check_and_bench() {
  stamp "vattn check $1"
  timeout 300 $BIN check "$1" > "$W/check-$1.log" 2>&1 || status=1
  grep -E "^(PASS|FAIL)|FAIL" "$W/check-$1.log" | tail -5
  stamp "vattn bench $1 $2"
  timeout 300 $BIN bench "$1" --json "$W/bench-$1.json" $2 > "$W/bench-$1.log" 2>&1 || status=1
}
for part in $PARTS; do
  case $part in
  decode) check_and_bench attention "${DECODE_ARGS:-}" ;;
  prefill) check_and_bench prefill "${PREFILL_ARGS:-}" ;;
  ncu)  # Nsight Compute on one decode split-kernel launch (64×4K) and one wgmma prefill launch (bf16, d 128).
    stamp "ncu decode"
    timeout 300 ncu -k regex:decode_partial_strided --launch-skip 8 --launch-count 1 --section SpeedOfLight \
      --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
      $BIN bench attention --shapes 64x4096 --stages 3 --storages contiguous-perLayer --groups 2 \
      --calls-per-group 2 --graph-calls 0 > "$W/ncu-decode.txt" 2>&1 || status=1
    stamp "ncu prefill"
    timeout 300 ncu -k regex:prefill_bf16_d128_wg2n64_contig --launch-skip 30 --launch-count 1 --section SpeedOfLight \
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
