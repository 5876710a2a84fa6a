#!/usr/bin/env bash
# Benchmark (not a test): data-parallel `diffuse train` on this machine. The default shapes model,
# the same config and global batch, run (a) as 1 process on all cores (the batch split over worker
# threads) and (b) as `diffuse launch --nproc N` ranks, each pinned to its share of the cores; the
# training rate of both in one invocation, rank 0's time in collectives, and the Gloo sum's
# bandwidth (bench_allreduce) for the shapes model's gradients and an SD3-medium LoRA's.
#   bash benchmarks/distributed_train.sh BUILD_DIR OUT_DIR [STEPS=300] [NPROC=2]
set -euo pipefail
build=${1:?usage: distributed_train.sh BUILD_DIR OUT_DIR [STEPS] [NPROC]}
out=${2:?usage: distributed_train.sh BUILD_DIR OUT_DIR [STEPS] [NPROC]}
steps=${3:-300}
n=${4:-2}
cli="$build/bin/diffuse"
rm -rf "$out" && mkdir -p "$out"
# Logged every 50 steps, no validation or checkpoints inside the timed steps.
cat > "$out/cfg.json" <<JSON
{"log_every": 50, "validate_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0, "lr_decay": "constant"}
JSON
# The feature cache is built once (by a short 1-process run) and copied into every run's folder.
"$cli" train --config "$out/cfg.json" --out "$out/warm" --steps 1 > "$out/warm.log" 2>&1
rate() {  # median it/s of the logged windows after the first
  grep -o '[0-9.]* it/s' "$1" | awk 'NR > 1 {print $1}' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}
run_one() {  # name, then the command's words
  local name=$1; shift
  mkdir -p "$out/$name" && cp -r "$out/warm/cache" "$out/$name/"
  "$@" --config "$out/cfg.json" --out "$out/$name" --steps "$steps" > "$out/$name.log" 2>&1
}
for round in 1 2; do
  run_one "one-$round" "$cli" train
  run_one "ranks-$round" "$cli" launch --nproc "$n" --port $((29600 + round)) -- train
done
batch=$(grep -o '"batch": *[0-9]*' "$out/warm/config.json" | grep -o '[0-9]*$')
echo "shapes model, global batch $batch, $steps steps, $(nproc) CPUs; median it/s of 50-step windows (two rounds)"
for round in 1 2; do
  one=$(rate "$out/one-$round.log")
  ranks=$(rate "$out/ranks-$round.log")
  echo "round $round: 1 process x $(grep -o 'split over [0-9]* worker' "$out/one-$round.log" | grep -o '[0-9]*' || echo 1) workers: $one it/s;" \
       "$n ranks: $ranks it/s ($(awk -v a="$ranks" -v b="$one" 'BEGIN {printf "%.2f", a / b}')x)"
  grep -o "rank 0's steps: .*" "$out/ranks-$round.log" | sed 's/^/  /'
done
# The gradients' sizes: the shapes model's parameters (float32) and an SD3-medium rank-64
# attention LoRA's 28.1 M (docs/finetune.md).
params=$(grep -o 'backbone: [0-9]* parameters' "$out/warm.log" | grep -o '[0-9]*')
echo "Gloo sum between $n local ranks (shapes gradients: $params parameters = $((params * 4)) bytes)"
"$cli" launch --nproc "$n" --port 29610 -- "$build/benchmarks/bench_allreduce" 4096 65536 $((params * 4)) 4194304 $((28100000 * 4))
