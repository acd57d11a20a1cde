#!/usr/bin/env bash
# The A/B runs of the report, interleaved: the demo on main's binary (BASE) and on this one with each matmul path,
# then vattn bench cpu with 16- vs 8-bit activations. Raw output under $OUT.
set -euo pipefail
BASE=${BASE:?the release vattn of main}
NEW=${NEW:-.build-rel/release/vattn}
OUT=${OUT:?directory}
mkdir -p "$OUT"
for round in 1 2 3; do
    "$BASE" demo --live 0 2> "$OUT/demo-main-$round.log"
    "$NEW" demo --live 0 --cpu-matmul float32 2> "$OUT/demo-float32-$round.log"
    "$NEW" demo --live 0 2> "$OUT/demo-integer16-$round.log"
    "$NEW" demo --live 0 --cpu-activations 8 2> "$OUT/demo-integer8-$round.log"
done
for round in 1 2 3; do
    for bits in 16 8; do
        "$NEW" bench cpu --repetitions 1 --prompt-tests 128,512 --generate-test 128 --streams 8,16 \
            --cpu-activations "$bits" > "$OUT/bench-cpu-$bits-$round.log"
    done
done
grep -H "output" "$OUT"/demo-*.log | grep throughput
grep -H "tok/s" "$OUT"/bench-cpu-*.log
