#pragma once
// The one place for LibTorch-version-specific code. diffuse builds against Debian's LibTorch 1.13
// (CPU) and LibTorch 2.x (pip wheels, CPU or CUDA); every call whose spelling differs between
// them goes through here, behind DIFFUSE_TORCH_2.
#include <algorithm>
#include <thread>

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
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

// Mixed precision on the CPU: inside the guard, matrix products and convolutions run in bfloat16
// (oneDNN; AMX where the CPU has it) while parameters, reductions and the loss stay float32.
class CpuAutocast {
 public:
  explicit CpuAutocast(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
#if DIFFUSE_TORCH_2
    prev_ = at::autocast::is_autocast_enabled(at::kCPU);
    at::autocast::set_autocast_enabled(at::kCPU, true);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
#else
    prev_ = at::autocast::is_cpu_enabled();
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
#endif
  }
  ~CpuAutocast() {
    if (!enabled_) return;
#if DIFFUSE_TORCH_2
    at::autocast::set_autocast_enabled(at::kCPU, prev_);
#else
    at::autocast::set_cpu_enabled(prev_);
#endif
    at::autocast::clear_cache();
  }
  CpuAutocast(const CpuAutocast&) = delete;
  CpuAutocast& operator=(const CpuAutocast&) = delete;

 private:
  bool enabled_, prev_ = false;
};

}  // namespace diffuse
