#!/usr/bin/env bash
# Builds the static, stripped `vattn` for the GPU machine (no Swift there) into .gpu/ (git-ignored, carried).
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --static-swift-stdlib --product vattn --scratch-path .build-static
mkdir -p .gpu
cp .build-static/release/vattn .gpu/vattn
strip .gpu/vattn
ls -la .gpu/vattn
