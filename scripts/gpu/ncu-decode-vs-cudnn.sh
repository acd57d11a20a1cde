#!/usr/bin/env bash
# Nsight Compute on our decode split kernel and on cuDNN's SDPA decode kernel (torch, BHSD contiguous) for one shape
# (SHAPE=BxL, default 64x4096; bf16, 32/8 heads, d 128): launch geometry, DRAM/L2 traffic and SM activity side by side.
# Expects .gpu/vattn(.gz). Output: $OUT/ncu-ours.txt, $OUT/ncu-cudnn.txt and a short table.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
[ -x .gpu/vattn ] || { gunzip -c .gpu/vattn.gz > /tmp/vattn && chmod +x /tmp/vattn; }
BIN=${BIN:-$( [ -x .gpu/vattn ] && echo .gpu/vattn || echo /tmp/vattn )}
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
SHAPE=${SHAPE:-64x4096}; B=${SHAPE%x*}; L=${SHAPE#*x}
M=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,\
lts__t_sectors_op_read.sum,lts__t_sector_hit_rate.pct,lts__throughput.avg.pct_of_peak_sustained_elapsed,\
lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_ltcfabric_op_read.sum,lts__t_requests_srcunit_tex_op_read.sum,\
l1tex__m_xbar2l1tex_read_sectors.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ldgsts.sum,\
sm__cycles_active.avg,sm__cycles_active.min,sm__cycles_active.max,sm__warps_active.avg.per_cycle_active,\
launch__grid_size,launch__block_size,launch__registers_per_thread,launch__shared_mem_per_block_dynamic,\
launch__shared_mem_per_block_static,launch__occupancy_limit_shared_mem
timeout 200 ncu -k regex:decode_partial --launch-skip 6 --launch-count 1 --metrics $M $BIN bench attention \
  --shapes "$SHAPE" --storages contiguous-perLayer --groups 2 --calls-per-group 2 --graph-calls 0 > "$OUT/ncu-ours.txt" 2>&1
cat > /tmp/cudnn_decode.py <<PY
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
B, L = $B, $L
q = torch.randn(B, 32, 1, 128, dtype=torch.bfloat16, device="cuda")
k = torch.randn(B, 8, L, 128, dtype=torch.bfloat16, device="cuda"); v = torch.randn_like(k)
with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    for _ in range(8): F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
torch.cuda.synchronize()
PY
timeout 200 ncu --launch-skip 6 --launch-count 3 -k regex:'^(?!.*(elementwise|fill|copy|randn|normal|uniform|distribution)).*$' \
  --metrics $M python3 /tmp/cudnn_decode.py > "$OUT/ncu-cudnn.txt" 2>&1
for f in ours cudnn; do echo "== $f"; grep -E "^  [a-zA-Z_].*\(|gpu__|dram__|lts__|sm__|launch__" "$OUT/ncu-$f.txt"; done
