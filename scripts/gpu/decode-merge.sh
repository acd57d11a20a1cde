#!/usr/bin/env bash
# The split-KV merges of the decode kernel (block, separate) in one call on the GPU machine: vattn check
# attention (runs each per multi-split case), then vattn bench attention --merge auto,separate (plain launches +
# CUDA graph), and a split-size sweep at 1×32K. Expects .gpu/vattn. Logs in $W (default /tmp/merge-out), packed into
# $OUT/merge-logs.tar.gz after every step; a short table last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
W=${W:-/tmp/merge-out}
mkdir -p "$OUT" "$W"
BIN=${BIN:-.gpu/vattn}
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
pack() { tar czf "$OUT/merge-logs.tar.gz" -C "$W" . 2>/dev/null; }
t0=$(date +%s)
stamp() { pack; echo "[$(( $(date +%s) - t0 )) s] $*"; }
status=0
{ echo "date: $(date -u +%FT%TZ)"; echo "commit: $(cat .gpu/COMMIT)"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } | tee "$W/env.txt"
stamp "vattn check attention"
timeout 240 $BIN check attention > "$W/check-attention.log" 2>&1 || status=1
tail -1 "$W/check-attention.log"
stamp "vattn bench attention --merge auto,separate"
timeout 120 $BIN bench attention --stages 3 --merge auto,separate --json "$W/merge-attention.json" > "$W/merge-attention.log" 2>&1 || status=1
for c in 1024 2048; do
  stamp "1x32K chunk $c"
  timeout 60 $BIN bench attention --shapes 1x32768 --chunk $c --stages 3 --merge auto,separate \
    --storages contiguous-perLayer,paged-16 --json "$W/merge-1x32K-chunk$c.json" > "$W/merge-1x32K-chunk$c.log" 2>&1 || status=1
done
stamp done
grep -h -E "^(PASS|FAIL)" "$W/check-attention.log"
grep -h "chunk" "$W"/merge-*.log | sed 's/(p10–p90 spread [0-9.]*), //; s/ GB\/s, [0-9.]* of copy//g'
pack
exit $status
