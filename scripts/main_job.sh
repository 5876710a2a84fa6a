#!/usr/bin/env bash
# The main job from a fresh Debian 12 machine. Until the training pipeline lands (issue: training
# pipeline and the main job) it installs, builds, and runs the examples and the `diffuse` program
# on what they write.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DIFFUSE_BUILD_DIR:-$root/build}
out=${DIFFUSE_OUT:-$root/out}

"$root/scripts/install_deps.sh"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target diffuse_cli example_01_checkpoint_io
mkdir -p "$out"
"$build/examples/example_01_checkpoint_io" "$out"
"$build/bin/diffuse" inspect "$out/tiny_mmdit.safetensors"
