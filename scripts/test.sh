#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: install dependencies, configure, build,
# run every test with ctest.
#   DIFFUSE_PARITY_TESTS=ON  also run the parity tests against the SD3.5 reference data in
#                            DIFFUSE_TESTDATA_DIR (default: ../shared/testdata beside the checkout)
#   DIFFUSE_BUILD_DIR        build directory (default: build/ in the checkout)
#   DIFFUSE_GENERIC_PASS=0   skip the second pass: the unit tests again with the library's
#                            CPU-specific kernels off (DIFFUSE_CPU_KERNELS=generic), so a result that
#                            holds with one machine's kernels only fails everywhere (docs/testing.md)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DIFFUSE_BUILD_DIR:-$root/build}
jobs=$(nproc)

"$root/scripts/install_deps.sh"

args=(-DCMAKE_BUILD_TYPE=Release "-DDIFFUSE_PARITY_TESTS=${DIFFUSE_PARITY_TESTS:-OFF}")
if [ -n "${DIFFUSE_TESTDATA_DIR:-}" ]; then args+=("-DDIFFUSE_TESTDATA_DIR=$DIFFUSE_TESTDATA_DIR"); fi
start=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja "${args[@]}"
cmake --build "$build" -j "$jobs"
built=$(date +%s)
ctest --test-dir "$build" --output-on-failure -j "$jobs"
tested=$(date +%s)
echo "test.sh: build $((built - start)) s, tests $((tested - built)) s"
if [ "${DIFFUSE_GENERIC_PASS:-1}" != "0" ]; then
  echo "test.sh: the unit tests again with DIFFUSE_CPU_KERNELS=generic (no AVX-512 kernels, weights as stored)"
  DIFFUSE_CPU_KERNELS=generic ctest --test-dir "$build" --output-on-failure -j "$jobs" -L 'core|torch'
  echo "test.sh: generic-kernel pass $(($(date +%s) - tested)) s"
fi
