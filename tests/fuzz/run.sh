#!/usr/bin/env bash
# Builds the safetensors header fuzzer with clang and runs it for a bounded time.
# usage: run.sh CLANGXX FUZZ_SRC WORK_DIR CMAKE SECONDS
set -euo pipefail
clangxx=$1 src=$2 work=$3 cmake=$4 seconds=${5:-20}
mkdir -p "$work/corpus"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
"$cmake" -S "$src" -B "$work/build" "${gen[@]}" -DCMAKE_CXX_COMPILER="$clangxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  > "$work/configure.log"
"$cmake" --build "$work/build" > "$work/build.log"
# Seeds: a valid two-tensor file with metadata, and an empty header.
h='{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]}}'
printf "\\x$(printf %02x ${#h})\\x00\\x00\\x00\\x00\\x00\\x00\\x00%s0123456789" "$h" > "$work/corpus/valid"
printf '\x02\x00\x00\x00\x00\x00\x00\x00{}' > "$work/corpus/empty"
"$work/build/fuzz_safetensors_header" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
  "$work/corpus" 2>&1 | tail -n 12
exit "${PIPESTATUS[0]}"
