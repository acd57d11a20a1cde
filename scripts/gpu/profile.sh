#!/usr/bin/env bash
# Per-kernel time of Llama-3-8B-shaped decode steps (vAttention vs paged) with Nsight Systems, if the machine has it.
# Carry .gpu/vattn.gz + .gpu/COMMIT. Prints the kernel summary tables last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
BIN=/tmp/vattn
gunzip -c .gpu/vattn.gz > $BIN && chmod +x $BIN
export VATTN_KERNEL_CACHE=/tmp/vattn-kernels
NSYS=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
echo "commit: $(cat .gpu/COMMIT); nsys: ${NSYS:-none}" | tee "$OUT/env.txt"
[ -n "$NSYS" ] || { echo "no nsys on this machine"; exit 1; }
for kv in vattention paged-16; do
  $NSYS profile -o "/tmp/decode-$kv" --force-overwrite true --trace cuda --cuda-graph-trace node \
    $BIN bench decode --shape llama-3-8b --context 16384 --batches 16 --kv $kv --steps 64 > "$OUT/run-$kv.log" 2>&1
  $NSYS stats --report cuda_gpu_kern_sum --format csv -o "$OUT/kernels-$kv" "/tmp/decode-$kv.nsys-rep" > /dev/null 2>&1
  echo "== $kv (batch 16, context 16K, 64+4 steps) =="
  python3 - "$OUT/kernels-${kv}_cuda_gpu_kern_sum.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
total = sum(float(r["Total Time (ns)"]) for r in rows)
for r in rows[:14]:
    name = r["Name"][:70]
    print(f'{float(r["Time (%)"]):5.1f}%  {float(r["Total Time (ns)"])/1e6:9.2f} ms  {int(r["Instances"]):7d}  {name}')
print(f"total {total/1e6:.1f} ms")
PY
done
