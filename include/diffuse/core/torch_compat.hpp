#pragma once
// The one place for LibTorch-version-specific code. diffuse builds against Debian's LibTorch 1.13
// (CPU) and LibTorch 2.x (pip wheels, CPU or CUDA); every call whose spelling differs between
// them goes through here, behind DIFFUSE_TORCH_2.
#include <algorithm>
#include <thread>

#include <ATen/Parallel.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR >= 2
#define DIFFUSE_TORCH_2 1
#else
#define DIFFUSE_TORCH_2 0
#endif

namespace diffuse {

// LibTorch may start with a single intra-op thread (measured on the 2-core CI machine), so
// programs call this once. `threads <= 0` means one per hardware thread.
inline int configure_threads(int threads = 0) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  return threads;
}

}  // namespace diffuse
