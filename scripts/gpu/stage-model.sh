#!/usr/bin/env bash
# Call 1 of 2 for GPU runs that need SmolLM2 (98 MB, over the 64 MiB carry limit): carry .models/smollm2.part-aa;
# this copies it to /tmp, where the next call (made at once, while the machine is warm) joins it with part-ab.
set -euo pipefail
cd "$(dirname "$0")/../.."
cp .models/smollm2.part-aa /tmp/smollm2.part-aa
ls -la /tmp/smollm2.part-aa
