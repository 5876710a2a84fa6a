#!/usr/bin/env bash
# Issue 35's rows for diffuse: the time until sampling starts, the first step, the later steps and
# the peak resident memory of `diffuse generate` on SD3-medium-size random weights in the released
# all-in-one layout (MM-DiT + VAE + CLIP-L + CLIP-G, T5 absent; float16 as released, and the same
# in bfloat16 and float32), 256x256, Euler, CFG 1 — and, in the same run, bench_mmdit's forward at
# that size, which the later steps should match. The images are noise: time and memory are what is
# measured. docs/generate.md has the results beside stable-diffusion.cpp's.
#   benchmarks/sd3_generate_rows.sh [BUILD_DIR] [WORK_DIR] [STEPS] [DTYPES] [FILE_DTYPES]
# DTYPES: compute dtypes, default "bf16 f32"; FILE_DTYPES: the files' dtypes, default "f16 bf16 f32"
# (6, 6 and 12 GB in WORK_DIR). Extra generate flags: EXTRA="--low-memory". RUNS=N runs each row N
# times and reports the run with the median time until sampling, the range of that time beside it
# (it varies with the host's memory state on the shared VM kinds).
set -euo pipefail
BUILD=${1:-build}
WORK=${2:-/tmp/sd3_rows}
STEPS=${3:-4}
DTYPES=${4:-bf16 f32}
FILE_DTYPES=${5:-f16 bf16 f32}
TOK=${DIFFUSE_TOKENIZERS:-../shared/testdata/tokenizers}   # bpe_simple_vocab_16e6.txt.gz
cmake --build "$BUILD" --target diffuse_cli bench_sd3_random_checkpoints bench_mmdit >/dev/null

printf '| file | compute dtype | until sampling starts | first step | later steps | bench_mmdit forward | peak RSS |\n'
printf '| --- | --- | --- | --- | --- | --- | --- |\n'
for FD in $FILE_DTYPES; do
 if [ "$FD" = f16 ]; then FILE="$WORK/sd3_medium_incl_clips.safetensors"; else FILE="$WORK/sd3_medium_incl_clips_$FD.safetensors"; fi
 if [ ! -f "$FILE" ]; then
   if [ "$FD" = f16 ]; then "$BUILD/benchmarks/bench_sd3_random_checkpoints" "$WORK" --all-in-one >&2
   else "$BUILD/benchmarks/bench_sd3_random_checkpoints" "$WORK" --all-in-one "$FD" >&2; fi
 fi
 for DT in $DTYPES; do
  cat "$FILE" > /dev/null   # in the page cache, as for a second run of a user's
  LOG="$WORK/generate_${FD}_$DT.log"
  : > "$LOG.lines"
  for _ in $(seq "${RUNS:-1}"); do
    "$BUILD/bin/diffuse" generate --model "$FILE" --tokenizers "$TOK" --prompt "a photo of a cat" \
      --width 256 --height 256 --steps "$STEPS" --cfg 1 --sampler euler --dtype "$DT" ${EXTRA:-} \
      --out "$WORK/noise_${FD}_$DT.png" 2> "$LOG"
    # "generated in T s: until sampling L s, first step F s, later steps S s/step, decode D s; peak RSS R GiB"
    grep '^generated in' "$LOG" | sed -E 's/.*until sampling ([0-9.]+) s.*/\1 &/' >> "$LOG.lines"
  done
  sort -g "$LOG.lines" > "$LOG.sorted"
  N=$(wc -l < "$LOG.sorted")
  LINE=$(sed -n "$(( (N + 1) / 2 ))p" "$LOG.sorted" | cut -d' ' -f2-)
  RANGE=""
  [ "$N" -gt 1 ] && RANGE=$(printf ' (%.1f-%.1f)' "$(head -1 "$LOG.sorted" | cut -d' ' -f1)" "$(tail -1 "$LOG.sorted" | cut -d' ' -f1)")
  FWD=$("$BUILD/benchmarks/bench_mmdit" --config sd3-medium --size 256 --dtype "$DT" --repeats 3 2>/dev/null |
        grep -oE 'forward [0-9.]+ s' | tail -1 | grep -oE '[0-9.]+ s')
  printf '| %s | %s | %.2f s%s | %.2f s | %.2f s | %s | %.2f GiB |\n' "$FD" "$DT" \
    "$(sed -E 's/.*until sampling ([0-9.]+) s.*/\1/' <<<"$LINE")" "$RANGE" \
    "$(sed -E 's/.*first step ([0-9.]+) s.*/\1/' <<<"$LINE")" \
    "$(sed -E 's/.*later steps ([0-9.]+) s\/step.*/\1/' <<<"$LINE")" \
    "${FWD:-?}" \
    "$(sed -E 's/.*peak RSS ([0-9.]+) GiB.*/\1/' <<<"$LINE")"
 done
done
