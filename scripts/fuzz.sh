#!/usr/bin/env bash
# Fuzzes each vattn-fuzz target (Sources/vattn-fuzz: the GGUF reader, request bodies, the tokenizer) for SECONDS
# (default 60) from the seed corpus in fuzz/corpus/, under AddressSanitizer. Any failure leaves the input that caused
# it in fuzz/findings/ (git-ignored) and exits non-zero; new inputs found go to .build-fuzz/corpus/ (the seeds stay as
# committed). Bounded in CI (scripts/test.sh runs it with 45 s per target).
#
# Built with coverage instrumentation rather than -sanitize=fuzzer: that flag links libFuzzer's main into every
# executable, build tools included (embed-cuda-sources), while vattn-fuzz has its own main that picks the target.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
FUZZER_LIB=$(dirname "$(dirname "$(command -v swift)")")/lib/clang
FUZZER_LIB=$(ls "$FUZZER_LIB"/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a 2>/dev/null | head -1 || true)
if [ -z "$FUZZER_LIB" ]; then
  echo "fuzz.sh: this Swift toolchain has no libclang_rt.fuzzer_no_main-x86_64.a (libFuzzer) under $(dirname "$(dirname "$(command -v swift)")")/lib/clang" >&2
  exit 1
fi
export ASAN_OPTIONS=detect_leaks=0  # the build's own tools run instrumented too; leaks are not what this looks for
timeout 1800 swift build --product vattn-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
  -Xswiftc -DVATTN_FUZZ -Xlinker "$FUZZER_LIB" -Xlinker -lstdc++
BIN=.build-fuzz/debug/vattn-fuzz
mkdir -p fuzz/findings
for target in gguf request tokenizer; do
  mkdir -p ".build-fuzz/corpus/$target"
  echo "== fuzz $target: ${SECONDS_PER_TARGET} s =="
  # -timeout: one input taking longer than 10 s is a finding (work must stay bounded per byte).
  timeout $((SECONDS_PER_TARGET + 120)) "$BIN" "$target" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
    -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 -artifact_prefix="fuzz/findings/$target-" \
    ".build-fuzz/corpus/$target" "fuzz/corpus/$target" 2>&1 | tee ".build-fuzz/$target.log" | tail -20
done
