# Sourced by serve-check.sh and serve-bench.sh (run from the repository root, after OUT, DEADLINE and status are set):
# the time-budgeted step runner, the environment record, the binary, SmolLM2 in the ModelStore cache, the wheels.
# shellcheck shell=bash disable=SC2034  # status is the sourcing script's

BIN=/tmp/vattn
STAGE=${STAGE_DIR:-/tmp/stage}
MODEL_DIR=${VATTN_MODEL_DIR:-$HOME/.cache/vattn/models}
SMOLLM2_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
export PYTHONUNBUFFERED=1 VATTN_KERNEL_CACHE=/tmp/vattn-kernels
STEPS="$OUT/steps.tsv"
LOG="$OUT/$(basename "$0" .sh).log"
: > "$STEPS"
: > "$LOG"

note() { echo "$(basename "$0" .sh): $*" | tee -a "$LOG"; }

# step NAME CAP_S CMD...: runs CMD under a timeout (CAP_S, cut to what is left before DEADLINE less 40 s for the end),
# output to the console and $OUT/NAME.log; records "NAME rc seconds" in steps.tsv; returns CMD's status (124 if the
# budget is spent). A failure sets status=1.
step() {
  local name=$1 cap=$2 left t rc t0
  shift 2
  left=$((DEADLINE - $(date +%s) - 40))
  t=$((cap < left ? cap : left))
  if [ "$t" -lt 15 ]; then
    note "$name: skipped, the time budget is spent"
    printf '%s\t%s\t%s\n' "$name" skipped 0 >> "$STEPS"
    status=1
    return 124
  fi
  echo "== $name (timeout ${t} s): $*"
  t0=$(date +%s)
  # timeout signals its whole process group, so a `vattn serve` that a killed pytest started goes too.
  timeout -k 15 "$t" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >> "$STEPS"
  [ "$rc" -eq 0 ] || status=1
  return "$rc"
}

# pack_logs ARCHIVE EXTRA...: every file this script wrote in $OUT (env.txt, summary.txt, steps.tsv, its own log, each
# step's log, EXTRA names) into $OUT/ARCHIVE; then, unless KEEP_LOGS=1, removes them but env.txt and summary.txt (a
# call returns at most 8 files). Only these names: OUT may be a folder with other things in it.
pack_logs() {
  local archive=$1 name files=()
  shift
  for name in env.txt summary.txt steps.tsv "$(basename "$LOG")" $(cut -f1 "$STEPS" | sed 's/$/.log/') "$@"; do
    [ -f "$OUT/$name" ] && files+=("$name")
  done
  timeout 120 tar czf "/tmp/$archive" -C "$OUT" "${files[@]}" && mv "/tmp/$archive" "$OUT/$archive"
  if [ -z "${KEEP_LOGS:-}" ] && [ -f "$OUT/$archive" ]; then
    for name in "${files[@]}"; do
      case $name in env.txt|summary.txt) ;; *) rm -f "${OUT:?}/$name" ;; esac
    done
  fi
}

# The date, the commit, the GPU, Python and the packages the Python side needs, into $OUT/env.txt.
record_env() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(cat .gpu/COMMIT 2>/dev/null || echo "no .gpu/COMMIT carried; /tmp/vattn.commit: $(cat /tmp/vattn.commit 2>/dev/null)")"
    timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
    echo "python: $(timeout 30 python3 --version 2>&1)"
    # What the machine has of openai's dependencies (pack.sh's DROP may then leave out what suffices).
    timeout 30 python3 -c '
import importlib.metadata as m
def version(n):
    try:
        return m.version(n)
    except m.PackageNotFoundError:
        return "-"
names = ("openai anyio idna h11 sniffio typing_extensions httpx httpcore httpx2 httpcore2 truststore jiter pydantic "
         "pydantic_core annotated_types typing_inspection certifi pytest numpy torch").split()
print("machine packages: " + ", ".join(n + " " + version(n) for n in names))'
    for v in "$@"; do echo "$v"; done
  } 2>&1 | tee "$OUT/env.txt"
}

# /tmp/vattn from .gpu/vattn.gz (as llama8b.sh: unpacked again only for another commit; without .gpu, the one
# unpacked before). Returns 1 if there is none.
unpack_vattn() {
  if [ -f .gpu/vattn.gz ]; then
    if ! { [ -x $BIN ] && [ "$(cat /tmp/vattn.commit 2>/dev/null)" = "$(cat .gpu/COMMIT)" ]; }; then
      timeout 120 gunzip -c .gpu/vattn.gz > $BIN.tmp || { note "cannot unpack .gpu/vattn.gz"; return 1; }
      chmod +x $BIN.tmp && mv $BIN.tmp $BIN && cp .gpu/COMMIT /tmp/vattn.commit
    fi
  elif [ -x $BIN ]; then
    note "no .gpu/vattn.gz carried: using the $BIN unpacked before"
  else
    note "no binary: carry .gpu/vattn.gz and .gpu/COMMIT"; return 1
  fi
  echo "binary: $BIN, commit $(cat /tmp/vattn.commit 2>/dev/null)" | tee -a "$OUT/env.txt"
}

# SmolLM2 where ModelStore looks ($MODEL_DIR), joined from the staged parts if needed (no network to pull it).
ensure_smollm2() {
  local file="$MODEL_DIR/$SMOLLM2_FILE"
  mkdir -p "$MODEL_DIR"
  if [ -f "$file" ] && echo "$SMOLLM2_SHA  $file" | timeout 60 sha256sum -c --status; then
    note "model: $file (SHA-256 checked)"; return 0
  fi
  if [ ! -f "$STAGE/smollm2.part-aa" ] || [ ! -f "$STAGE/smollm2.part-ab" ]; then
    note "no model: stage .stage/smollm2.part-aa and part-ab first (scripts/gpu/stage.sh)"; return 1
  fi
  timeout 60 cat "$STAGE/smollm2.part-aa" "$STAGE/smollm2.part-ab" > "$MODEL_DIR/.$SMOLLM2_FILE.tmp"
  if ! echo "$SMOLLM2_SHA  $MODEL_DIR/.$SMOLLM2_FILE.tmp" | timeout 60 sha256sum -c --status; then
    rm -f "$MODEL_DIR/.$SMOLLM2_FILE.tmp"
    note "the model parts in $STAGE do not join to SHA-256 $SMOLLM2_SHA"; return 1
  fi
  mv "$MODEL_DIR/.$SMOLLM2_FILE.tmp" "$file"
  note "model: joined $STAGE/smollm2.part-aa + part-ab into $file (SHA-256 checked)"
}

# The openai client and what it needs (staged wheels) into /tmp/site, first on PYTHONPATH; returns 1 if python3
# still cannot import openai, httpx (and pytest with the argument "pytest").
python_wheels() {
  if compgen -G "$STAGE/whl/*.whl" >/dev/null; then
    step wheels 120 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$STAGE"/whl/*.whl
  fi
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  local mods="openai, httpx${1:+, $1}"
  if ! timeout 60 python3 -c "import $mods
print('imports:', ', '.join(m.__name__ + ' ' + getattr(m, '__version__', '?') for m in ($mods,)))" 2>&1 \
    | tee -a "$OUT/env.txt" "$LOG"; then
    note "python3 cannot import $mods: carry .whl (scripts/gpu/pack.sh)"; return 1
  fi
}
