#!/usr/bin/env bash
# Peak memory of `diffuse generate` with SD3-medium-size weights and all three text encoders at
# 1024x1024 in bf16 on this machine (issue: it must run in 24 GiB). The released weights are not
# here, so full-size random float16 checkpoints are written first (~16 GB on disk; images are
# noise). Usage: scripts/sd3_memory_check.sh [BUILD_DIR] [WORK_DIR] [STEPS]
set -euo pipefail
BUILD=${1:-build}
WORK=${2:-/tmp/sd3_memory}
STEPS=${3:-1}
TOK=${DIFFUSE_TOKENIZERS:-../shared/testdata/tokenizers}   # bpe_simple_vocab_16e6.txt.gz + spiece.model
cmake --build "$BUILD" --target diffuse_cli bench_sd3_random_checkpoints
[ -f "$WORK/t5xxl_fp16.safetensors" ] || "$BUILD/benchmarks/bench_sd3_random_checkpoints" "$WORK"
/usr/bin/time -v "$BUILD/bin/diffuse" generate --model "$WORK/mmdit.safetensors" --vae "$WORK/vae.safetensors" \
  --clip-l "$WORK/clip_l.safetensors" --clip-g "$WORK/clip_g.safetensors" --t5 "$WORK/t5xxl_fp16.safetensors" \
  --tokenizers "$TOK" --prompt "a photo of a cat" --width 1024 --height 1024 --steps "$STEPS" --dtype bf16 \
  --low-memory ${EXTRA:-} --out "$WORK/noise.png" 2>&1 | grep -v "^\s*$" | grep -E -v "^\s+(Page size|Exit status|Socket|Signals|Swaps|File system|Average|Voluntary|Involuntary|Minor|Major|Percent|System time|User time)" 
