#!/usr/bin/env bash
# vattn's CPU engine against llama.cpp on the same GGUF and the same cores: llama-bench (pp, tg) and
# llama-batched-bench (N streams) against `vattn bench cpu`, in interleaved rounds, medians, then the ratio table.
#
# llama.cpp is the copy inside the llama-cpp-python==0.3.36 sdist (ggml 0.25.3), built once into $LLAMA_DIR with
# GGML_NATIVE (~5 min on 2 cores). Needs cmake and a C++ compiler; pip fetches the sdist.
#
# Environment: VATTN (binary, default .build-rel/release/vattn), MODEL (GGUF, default the SmolLM2 Q4_1 of
# scripts/fixtures/fetch_model.sh), ROUNDS (3), OUT (where the raw results go, default a new temporary directory),
# LLAMA_DIR (~/.cache/vattn/llamacpp). vattn uses every online CPU; llama.cpp gets -t $(nproc) to match.
set -euo pipefail
cd "$(dirname "$0")/../.."

VATTN=${VATTN:-.build-rel/release/vattn}
MODEL=${MODEL:-$HOME/.cache/vattn/models/SmolLM2-135M-Instruct.Q4_1.gguf}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-$(mktemp -d -t vattn-llamacpp-XXXXXX)}
LLAMA_DIR=${LLAMA_DIR:-$HOME/.cache/vattn/llamacpp}
THREADS=$(nproc)
BIN=$LLAMA_DIR/src/build/bin
mkdir -p "$OUT"

[[ -x $VATTN ]] || { echo "no $VATTN: swift build -c release --scratch-path .build-rel --product vattn" >&2; exit 1; }
[[ -f $MODEL ]] || { echo "no $MODEL: bash scripts/fixtures/fetch_model.sh" >&2; exit 1; }

if [[ ! -x $BIN/llama-bench || ! -x $BIN/llama-batched-bench ]]; then
    echo "building llama.cpp (llama-cpp-python==0.3.36) in $LLAMA_DIR" >&2
    mkdir -p "$LLAMA_DIR"
    # Only this package from source: its build requirements (cmake, ninja) may come as wheels.
    python3 -m pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$LLAMA_DIR" >&2
    tar xzf "$LLAMA_DIR/llama_cpp_python-0.3.36.tar.gz" -C "$LLAMA_DIR"
    rm -rf "$LLAMA_DIR/src"
    mv "$LLAMA_DIR/llama_cpp_python-0.3.36/vendor/llama.cpp" "$LLAMA_DIR/src"
    rm -rf "$LLAMA_DIR/llama_cpp_python-0.3.36"
    (cd "$LLAMA_DIR/src" && cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release >&2 \
        && cmake --build build -j "$THREADS" --target llama-bench llama-batched-bench >&2)
fi

echo "model $MODEL; $THREADS threads; $ROUNDS rounds; raw results in $OUT" >&2
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round: vattn bench cpu, llama-bench, llama-batched-bench" >&2
    "$VATTN" bench cpu --model "$MODEL" --repetitions 1 --prompt-tests 128,512 --generate-test 128 --depths 0,512 \
        --streams 1,4,8,16 --prompt 128 --generate 128 --json "$OUT/vattn-$round.json" >&2
    "$BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p 128,512 -n 128 -r 1 -o json > "$OUT/llama-bench-$round.json"
    "$BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p 0 -n 128 -d 512 -r 1 -o json > "$OUT/llama-bench-d512-$round.json"
    "$BIN/llama-batched-bench" -m "$MODEL" -t "$THREADS" -c 4096 -b 2048 -ub 512 -npp 128 -ntg 128 -npl 1,4,8,16 \
        --output-format jsonl 2>&1 | grep '^{' > "$OUT/llama-batched-bench-$round.jsonl"
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}  # metric -> (vattn values, llama.cpp values)
def add(metric, ours, theirs):
    v = rows.setdefault(metric, ([], []))
    v[0].append(ours); v[1].append(theirs)
for r in range(1, rounds + 1):
    ours = json.load(open(f"{out}/vattn-{r}.json"))
    bench = json.load(open(f"{out}/llama-bench-{r}.json")) + json.load(open(f"{out}/llama-bench-d512-{r}.json"))
    def ts(n_prompt, n_gen, depth=0):
        return next(b["avg_ts"] for b in bench if b["n_prompt"] == n_prompt and b["n_gen"] == n_gen and b.get("n_depth", 0) == depth)
    add("pp128 tok/s", ours["pp128"]["tokens_per_second"], ts(128, 0))
    add("pp512 tok/s", ours["pp512"]["tokens_per_second"], ts(512, 0))
    add("tg128 tok/s", ours["tg128"]["tokens_per_second"], ts(0, 128))
    add("tg128 @ depth 512 tok/s", ours["tg128@d512"]["tokens_per_second"], ts(0, 128, 512))
    batched = [json.loads(line) for line in open(f"{out}/llama-batched-bench-{r}.jsonl")]
    for b in batched:
        s = ours[f"streams{b['pl']}"]
        add(f"{b['pl']} streams: prompt tok/s", s["prompt_tokens_per_second"], b["speed_pp"])
        add(f"{b['pl']} streams: output tok/s", s["output_tokens_per_second"], b["speed_tg"])
        add(f"{b['pl']} streams: total tok/s", s["total_tokens_per_second"], b["speed"])
print(f"| metric (median of {rounds} interleaved rounds) | vattn | llama.cpp | ratio |")
print("|---|---|---|---|")
for metric, (ours, theirs) in rows.items():
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"| {metric} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
PY
