#!/usr/bin/env bash
# Our attention kernels and the peers (PyTorch SDPA, FlashInfer) in ONE run on the GPU machine, same shapes, and one
# side-by-side table printed last. Expects .gpu/vattn or .gpu/vattn.gz (scripts/gpu/build.sh) and the FlashInfer wheels in .whl/
# (carried). Logs and JSON go to $W (default /tmp/anchors-out); after every step they are packed into
# $OUT/anchors-logs.tar.gz (the device tool brings back at most 8 files), and the table is also written to $OUT/table.md.
#   checks:  vattn check cuda (incl. the CUDA graph case), vattn check attention, vattn check prefill
#   ours:    vattn bench attention (plain launches + CUDA graph, copy ceiling), vattn bench prefill
#   peers:   bench/anchors/peers.py (FlashInfer's JIT build runs in the background during the checks)
# SKIP_CHECKS=1 skips the checks; EXTRA_ATTENTION_ARGS are passed to `vattn bench attention`.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
W=${W:-/tmp/anchors-out}
mkdir -p "$OUT" "$W"
pack() { tar czf "$OUT/anchors-logs.tar.gz" -C "$W" . 2>/dev/null; }
[ -x .gpu/vattn ] || { gunzip -c .gpu/vattn.gz > /tmp/vattn && chmod +x /tmp/vattn; }  # carried compressed
BIN=${BIN:-$( [ -x .gpu/vattn ] && echo .gpu/vattn || echo /tmp/vattn )}
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
export PYTHONUNBUFFERED=1
export FLASHINFER_WORKSPACE_BASE=/tmp/flashinfer-cache FLASHINFER_CUDA_ARCH_LIST=9.0a MAX_JOBS=14
status=0
t0=$(date +%s)
stamp() { pack; echo "[$(( $(date +%s) - t0 )) s] $*"; }
{
  echo "date: $(date -u +%FT%TZ)"; echo "commit: $(cat .gpu/COMMIT 2>/dev/null || git rev-parse --short HEAD)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader
  python3 -c 'import torch, triton; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version(), "triton", triton.__version__)'
  nvcc --version | tail -2
} 2>&1 | tee "$W/env.txt"

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$W/pip.log" 2>&1 || { echo "wheel install failed:"; tail -5 "$W/pip.log"; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "no .whl/: FlashInfer will be reported as not importable"
fi

stamp "FlashInfer JIT build in the background"
python3 bench/anchors/peers.py --jit-only > "$W/flashinfer-jit.log" 2>&1 &
jit=$!

# Decode merges benchmarked: the shapes' own choice plus the separate merge where it differs from it; only the
# separate one if `vattn check attention` (which runs both) failed.
MERGE=${MERGE:-auto,separate}
if [ -z "${SKIP_CHECKS:-}" ]; then
  stamp "vattn check cuda"
  timeout 90 $BIN check cuda --operations 200 > "$W/check-cuda.log" 2>&1 || status=1
  tail -2 "$W/check-cuda.log"
  stamp "vattn check attention"
  if ! timeout 150 $BIN check attention > "$W/check-attention.log" 2>&1; then
    status=1; MERGE=separate; echo "check attention failed: only the separate merge is benchmarked"
  fi
  tail -1 "$W/check-attention.log"
  stamp "vattn check prefill"
  timeout 150 $BIN check prefill > "$W/check-prefill.log" 2>&1 || status=1
  tail -1 "$W/check-prefill.log"
  # Registers and local memory (spills) of every compiled kernel, from the NVRTC cache.
  for f in /tmp/vattn-kernels/*; do cuobjdump -res-usage "$f" 2>/dev/null; done > "$W/res-usage.txt"
fi
stamp "waiting for the FlashInfer JIT build"
( sleep 180; kill $jit 2>/dev/null ) & watchdog=$!
wait $jit || echo "FlashInfer JIT build failed (peers.py will say why): $(tail -3 "$W/flashinfer-jit.log")"
kill $watchdog 2>/dev/null
tail -1 "$W/flashinfer-jit.log"

stamp "vattn bench attention"
timeout 150 $BIN bench attention --stages 3 --merge $MERGE --json "$W/ours-attention.json" ${EXTRA_ATTENTION_ARGS:-} \
  > "$W/ours-attention.log" 2>&1 || { status=1; tail -5 "$W/ours-attention.log"; }
stamp "vattn bench prefill"
timeout 120 $BIN bench prefill --json "$W/ours-prefill.json" > "$W/ours-prefill.log" 2>&1 || { status=1; tail -5 "$W/ours-prefill.log"; }
stamp "peers"
timeout 240 python3 bench/anchors/peers.py --json "$W/peers.json" --md "$W/peers.md" > "$W/peers.log" 2>&1 \
  || { status=1; tail -20 "$W/peers.log"; }
grep -h "CANNOT RUN" "$W/peers.log" | head -20
stamp "done"
echo
echo "== checks =="
grep -h -E "^(PASS|FAIL|SKIP)|graph:" "$W"/check-*.log 2>/dev/null
echo "== side by side =="
python3 bench/anchors/table.py "$W/ours-attention.json" "$W/ours-prefill.json" "$W/peers.json" \
  --md "$OUT/table.md" || status=1
cp "$OUT/table.md" "$W/" 2>/dev/null; pack
exit $status
