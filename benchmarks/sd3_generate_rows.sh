#!/usr/bin/env bash
# Issue 35's rows for diffuse: the time until sampling starts, the first step, the later steps and
# the peak resident memory of `diffuse generate` on SD3-medium-size random weights in the released
# all-in-one layout (float16 file, MM-DiT + VAE + CLIP-L + CLIP-G, T5 absent), 256x256, Euler,
# CFG 1 — and, in the same run, bench_mmdit's forward at that size, which the later steps should
# match. The images are noise: time and memory are what is measured. docs/generate.md has the
# results beside stable-diffusion.cpp's.
#   benchmarks/sd3_generate_rows.sh [BUILD_DIR] [WORK_DIR] [STEPS] [DTYPES]
# DTYPES: compute dtypes to run, default "bf16 f32". Extra generate flags: EXTRA="--low-memory".
set -euo pipefail
BUILD=${1:-build}
WORK=${2:-/tmp/sd3_rows}
STEPS=${3:-4}
DTYPES=${4:-bf16 f32}
TOK=${DIFFUSE_TOKENIZERS:-../shared/testdata/tokenizers}   # bpe_simple_vocab_16e6.txt.gz
FILE="$WORK/sd3_medium_incl_clips.safetensors"
cmake --build "$BUILD" --target diffuse_cli bench_sd3_random_checkpoints bench_mmdit >/dev/null
[ -f "$FILE" ] || "$BUILD/benchmarks/bench_sd3_random_checkpoints" "$WORK" --all-in-one
cat "$FILE" > /dev/null   # in the page cache, as for a second run of a user's

printf '| compute dtype | until sampling starts | first step | later steps | bench_mmdit forward | peak RSS |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
for DT in $DTYPES; do
  LOG="$WORK/generate_$DT.log"
  "$BUILD/bin/diffuse" generate --model "$FILE" --tokenizers "$TOK" --prompt "a photo of a cat" \
    --width 256 --height 256 --steps "$STEPS" --cfg 1 --sampler euler --dtype "$DT" ${EXTRA:-} \
    --out "$WORK/noise_$DT.png" 2> "$LOG"
  # "generated in T s: until sampling L s, first step F s, later steps S s/step, decode D s; peak RSS R GiB"
  LINE=$(grep '^generated in' "$LOG")
  FWD=$("$BUILD/benchmarks/bench_mmdit" --config sd3-medium --size 256 --dtype "$DT" --repeats 3 2>/dev/null |
        grep -oE 'forward [0-9.]+ s' | tail -1 | grep -oE '[0-9.]+ s')
  printf '| %s | %s s | %s s | %s s | %s | %s GiB |\n' "$DT" \
    "$(sed -E 's/.*until sampling ([0-9.]+) s.*/\1/' <<<"$LINE")" \
    "$(sed -E 's/.*first step ([0-9.]+) s.*/\1/' <<<"$LINE")" \
    "$(sed -E 's/.*later steps ([0-9.]+) s\/step.*/\1/' <<<"$LINE")" \
    "${FWD:-?}" \
    "$(sed -E 's/.*peak RSS ([0-9.]+) GiB.*/\1/' <<<"$LINE")"
done
