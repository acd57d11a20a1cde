#!/usr/bin/env bash
# Staging for GPU runs that need more than one call's 64 MiB carry: scripts/gpu/pack.sh puts the pieces under .stage/
# (and wheels under .whl/); make back-to-back calls (while the machine is warm), each carrying some of them and running
# this. It copies every carried file under .stage/ into /tmp/stage/ (same relative paths) and any carried .whl/*.whl
# into /tmp/stage/whl/ (replacing the wheels staged before), so the last call finds them all there.
# serve-check.sh and serve-bench.sh run it first too, so the last call's own .stage/ and .whl/ count as well.
# E.g.  call 1: carry .stage/smollm2.part-aa                        bash scripts/gpu/stage.sh
#       call 2: carry .stage/smollm2.part-ab .whl                   bash scripts/gpu/stage.sh
#       call 3: carry .gpu/vattn.gz .gpu/COMMIT                     bash scripts/gpu/serve-check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${STAGE_DIR:-/tmp/stage}
mkdir -p "$DEST"
if [ -d .stage ] && [ -n "$(ls -A .stage)" ]; then
  timeout 120 cp -a .stage/. "$DEST/"
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  rm -rf "$DEST/whl"
  mkdir -p "$DEST/whl"
  timeout 60 cp .whl/*.whl "$DEST/whl/"
fi
echo "stage: $DEST holds ($(df -h --output=avail "$DEST" | tail -1 | tr -d ' ') free on its disk):"
(cd "$DEST" && timeout 30 find . -type f -printf '  %10s  %P\n' | sort -k2)
