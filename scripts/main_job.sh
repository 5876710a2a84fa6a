#!/usr/bin/env bash
# The main job from a fresh Debian 12 machine: install the dependencies, build the `diffuse`
# program, train the default shapes model (SD3's recipe on 32 x 32 pixels) for MINUTES minutes of
# wall time, sample a grid and print the GenEval-style evaluation table. Reports the time split.
#   MINUTES       training budget (default 10)
#   DIFFUSE_OUT   output folder (default out/ in the checkout); the model goes to $DIFFUSE_OUT/shapes
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DIFFUSE_BUILD_DIR:-$root/build}
out=${DIFFUSE_OUT:-$root/out}
minutes=${MINUTES:-10}
model="$out/shapes"

t0=$(date +%s)
"$root/scripts/install_deps.sh"
t1=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$(nproc)" --target diffuse_cli
t2=$(date +%s)
mkdir -p "$out"
if [ -e "$model/state.json" ]; then
  echo "main_job: $model holds an earlier run; moving it to $model.previous"
  rm -rf "$model.previous" && mv "$model" "$model.previous"
fi
"$build/bin/diffuse" train --out "$model" --minutes "$minutes"
t3=$(date +%s)
"$build/bin/diffuse" sample --checkpoint "$model" --seed 1 --out "$out/shapes_samples.png" \
  --prompt "a red circle" --prompt "a blue square" --prompt "a green triangle" --prompt "two yellow circles" \
  --prompt "three purple squares" --prompt "a red circle above a blue square" \
  --prompt "a green square left of a yellow triangle" --prompt "an orange circle and a blue triangle"
"$build/bin/diffuse" eval --checkpoint "$model" --out "$out/shapes_eval" | tee "$out/shapes_eval.txt"
t4=$(date +%s)
echo "main_job: install $((t1 - t0)) s, build $((t2 - t1)) s, train $((t3 - t2)) s, sample + evaluate $((t4 - t3)) s," \
     "total $((t4 - t0)) s"
echo "main_job: model in $model (loss.png, samples.png, metrics.jsonl), grid $out/shapes_samples.png," \
     "table $out/shapes_eval.txt"
