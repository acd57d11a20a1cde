#!/usr/bin/env bash
# The project's test command (README): unit and integration tests on the CPU, then the concurrency tests under
# ThreadSanitizer. GPU tests are not here: they need a GPU (scripts/gpu/run-all.sh on the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fixtures/fetch_model.sh
swift test 2>&1 | tee /tmp/vattn-test.log
echo "== C ABI + Python package (numpy views over the host backend) =="
swift build --product vattention_c
python3 -m pip install -q --disable-pip-version-check numpy pytest openai httpx hypothesis
(cd python && VATTN_LIB=../.build/debug/libvattention_c.so python3 -m pytest -q tests/test_host.py)
echo "== vattn serve through the official openai Python client (127.0.0.1 only) =="
swift build --product vattn
python3 -m pytest -q tests/openai_client_test.py
echo "== clients that misbehave: oversized heads and bodies, idle and half-sent sockets, HTTP/1.0, limits =="
python3 -m pytest -q tests/hostile_client_test.py
echo "== property-based HTTP test (hypothesis, derandomized): valid and hostile bodies, methods, paths; never a 5xx =="
python3 -m pytest -q tests/property_http_test.py
echo "== how vattn serve ends: drain on SIGTERM, --drain-timeout, a second signal =="
python3 -m pytest -q tests/shutdown_test.py
echo "== bench/http/loadgen.py (the HTTP load generator) against vattn serve =="
python3 -m pytest -q tests/loadgen_test.py
echo "== the vattn binary as users run it: the demo, vattn chat through a pipe =="
python3 -m pytest -q tests/cli_test.py
echo "== soak: 300 mixed requests with client disconnects against vattn serve, then leak checks (a few minutes) =="
python3 -m pytest -q -s tests/soak_test.py
echo "== fuzz corpus replay (GGUF reader, request bodies, tokenizer): every property holds on every saved input =="
swift build --product vattn-fuzz
for target in gguf request tokenizer; do .build/debug/vattn-fuzz "$target" "fuzz/corpus/$target"; done
echo "== fuzzing, bounded: 45 s per target under AddressSanitizer (scripts/fuzz.sh) =="
scripts/fuzz.sh 45
echo "== ThreadSanitizer: memory manager and background mapper =="
swift test --scratch-path .build-tsan --sanitize=thread --filter VAttentionTests
