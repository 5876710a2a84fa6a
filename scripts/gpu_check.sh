#!/usr/bin/env bash
# The prepared GPU check (run on a lent GPU machine with PyTorch 2.x + CUDA; see docs/gpu.md):
#  1. builds benchmarks/sd3_device.cpp against the pip wheel's LibTorch with CMake
#     (torch.utils.cmake_prefix_path), falling back to g++ with the wheel's paths if CMake fails;
#  2. float32 parity of MM-DiT / CLIP / T5 reference cases on the CPU and on CUDA (LibTorch 2.x:
#     the scaled_dot_product_attention path);
#  3. one SD3-medium-config 1024x1024, 28-step, CFG image with random weights in bf16 on CUDA.
# Usage: scripts/gpu_check.sh KIT_DIR OUT_DIR
#   KIT_DIR/include: header-only dependencies the machine lacks; KIT_DIR/sd3ref: the reference cases.
set -uo pipefail
KIT=$(realpath "${1:-.gpu}")
OUT=$(realpath -m "${2:-/tmp/gpu_out}")
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
SRC=$(pwd)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
g++ --version | head -1; cmake --version | head -1
PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11 abi", torch.compiled_with_cxx11_abi())'
BIN=""
t0=$(date +%s)
if cmake -S benchmarks/device -B /tmp/devbuild -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
     -DDIFFUSE_KIT_INCLUDE="$KIT/include" > /tmp/devbuild.log 2>&1 \
   && cmake --build /tmp/devbuild -j 16 >> /tmp/devbuild.log 2>&1; then
  BIN=/tmp/devbuild/bench_sd3_device
  echo "built with CMake + find_package(Torch) in $(( $(date +%s) - t0 )) s"
else
  echo "CMake build failed (tail of the log below); trying g++ directly"
  tail -30 /tmp/devbuild.log
  cp /tmp/devbuild.log "$OUT/cmake.log"
  FLAGS=$(python3 - <<'PY'
import torch
from torch.utils.cpp_extension import include_paths, library_paths
print(" ".join("-I" + p for p in include_paths()), " ".join("-L%s -Wl,-rpath,%s" % (p, p) for p in library_paths()),
      "-D_GLIBCXX_USE_CXX11_ABI=%d" % int(torch.compiled_with_cxx11_abi()))
PY
)
  if g++ -std=c++20 -O2 -Iinclude -I"$KIT/include" benchmarks/sd3_device.cpp -o /tmp/bench_sd3_device $FLAGS \
       -ltorch -ltorch_cpu -ltorch_cuda -lc10 -lc10_cuda -lpthread -ldl > /tmp/gxx.log 2>&1; then
    BIN=/tmp/bench_sd3_device
    echo "built with g++ in $(( $(date +%s) - t0 )) s"
  else
    tail -40 /tmp/gxx.log; cp /tmp/gxx.log "$OUT/gxx.log"; exit 1
  fi
fi
rc=0
# GPU_CHECK_QUICK=1: CUDA parity and one timed image only (a rerun after a change).
[ -z "${GPU_CHECK_QUICK:-}" ] && { "$BIN" parity "$KIT/sd3ref" --device cpu || rc=1; }
"$BIN" parity "$KIT/sd3ref" --device cuda || rc=1
"$BIN" bench --device cuda --size 1024 --steps 28 --dtype bf16 || rc=1
[ -z "${GPU_CHECK_QUICK:-}" ] && { "$BIN" bench --device cuda --size 1024 --steps 28 --dtype bf16 --no-vae || rc=1; }
echo "gpu_check done, rc=$rc"
exit $rc
