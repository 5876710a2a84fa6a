#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: install dependencies, configure, build,
# run every test with ctest.
#   DIFFUSE_PARITY_TESTS=ON  also run the parity tests against the SD3.5 reference data in
#                            DIFFUSE_TESTDATA_DIR (default: ../shared/testdata beside the checkout)
#   DIFFUSE_BUILD_DIR        build directory (default: build/ in the checkout)
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
echo "test.sh: build $((built - start)) s, tests $(($(date +%s) - built)) s"
