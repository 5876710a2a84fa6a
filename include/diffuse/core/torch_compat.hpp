#pragma once
// The one place for LibTorch-version-specific code. diffuse builds against Debian's LibTorch 1.13
// (CPU) and LibTorch 2.x (pip wheels, CPU or CUDA); every call whose spelling differs between
// them goes through here, behind DIFFUSE_TORCH_2.
#include <algorithm>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#if TORCH_VERSION_MAJOR >= 2
#define DIFFUSE_TORCH_2 1
#else
#define DIFFUSE_TORCH_2 0
#endif

namespace diffuse {

// The hardware threads this process may run on: its CPU affinity where the OS reports one (a run
// pinned with `taskset -c 0` or a container's cpuset gets 1, not the machine's count, which
// std::thread::hardware_concurrency() returns and which would oversubscribe the allowed cores).
inline int usable_hardware_threads() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// LibTorch may start with a single intra-op thread (measured on the 2-core CI machine), so
// programs call this once. `threads <= 0` means one per usable hardware thread.
inline int configure_threads(int threads = 0) {
  if (threads <= 0) threads = usable_hardware_threads();
  at::set_num_threads(threads);
  return threads;
}

// Mixed precision on the CPU: inside the guard, matrix products and convolutions run in bfloat16
// (oneDNN; AMX where the CPU has it) while parameters, reductions and the loss stay float32.
// Whether CPU autocast (bf16 products) is on in this thread.
inline bool cpu_autocast_enabled() {
#if DIFFUSE_TORCH_2
  return at::autocast::is_autocast_enabled(at::kCPU);
#else
  return at::autocast::is_cpu_enabled();
#endif
}

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
