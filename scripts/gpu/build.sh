#!/usr/bin/env bash
# Builds the static, stripped `vattn` for the GPU machine (no Swift there) into .gpu/ (git-ignored, carried).
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --static-swift-stdlib --product vattn --scratch-path .build-static
mkdir -p .gpu
cp .build-static/release/vattn .gpu/vattn
strip .gpu/vattn
# Compressed too: small enough to carry beside half of a model file (the carry limit is 64 MiB).
gzip -9 -c .gpu/vattn > .gpu/vattn.gz
git rev-parse --short HEAD > .gpu/COMMIT
ls -la .gpu/vattn .gpu/vattn.gz
# The C ABI as a shared library with the Swift runtime linked in (loads wherever glibc does): for python/.
swift build -c release --product vattention_c -Xswiftc -static-stdlib --scratch-path .build-static-lib
cp .build-static-lib/release/libvattention_c.so .gpu/
strip .gpu/libvattention_c.so
