#!/usr/bin/env bash
# Installs diffuse's build and test dependencies from Debian 12 (bookworm) apt.
# Idempotent: packages already present are skipped, and apt is not touched when nothing is missing.
#   libtorch-dev       tensors, autograd, nn modules (LibTorch 1.13.1, CPU)
#   libopenblas-dev    without it torch falls back to reference BLAS (~5 vs ~200 GFLOP/s fp32)
#   libgloo-dev        headers needed by torch's distributed (c10d) headers
#   libxtensor-dev     host-side numerics without autograd
#   libboost-dev       Boost.Hana (compile-time policy maps, config reflection)
#   libsentencepiece-dev  T5 tokenizer and tokenizer training (loaded through a shim, see docs/dependencies.md)
#   catch2             unit tests (Catch2 v2)
#   nlohmann-json3-dev safetensors headers, configs
#   libcli11-dev       the `diffuse` command line
#   libfmt-dev         formatting
#   libstb-dev         PNG and JPEG read, PNG write, resizing (aspect-ratio buckets)
#   libwebp-dev        WebP images in fine-tuning image folders
#   libicu-dev zlib1g-dev  Unicode normalisation for CLIP's tokenizer; its gzip vocabulary
#   cmake ninja-build g++ pkg-config  the build
#   clang libclang-rt-14-dev  optional libFuzzer build of the torch-free parsers
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config
  libtorch-dev libopenblas-dev libgloo-dev
  libxtensor-dev libboost-dev libsentencepiece-dev
  catch2 nlohmann-json3-dev libcli11-dev libfmt-dev libstb-dev libwebp-dev libicu-dev zlib1g-dev
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install_deps: done"
