#pragma once
// Process-level settings that decide CPU speed with Debian's LibTorch (torch-free; measured on the
// CI machine kind, docs/performance.md):
//  - OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads otherwise spin after each parallel region and
//    compete with OpenBLAS's own pthreads for the 2 cores; an fp32 MM-DiT forward went from 36% to
//    72-96% of the GEMM rate.
//  - OPENBLAS_CORETYPE=SkylakeX when OpenBLAS 0.3.21 does not recognise the CPU and falls back to
//    its Prescott (SSE3) kernels although the CPU has AVX-512: fp32 GEMM 35 -> 220 GFLOP/s.
// Both are read when the libraries load, before main, so `tune_runtime(argv)` sets what is unset
// and re-executes the program once. A variable already set is never changed; DIFFUSE_NO_TUNE=1
// turns the whole thing off. Programs call it first thing in main; the library never calls it.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <strings.h>

namespace diffuse {

inline bool openblas_fell_back_to_prescott() {
  using Fn = char* (*)();
  auto fn = reinterpret_cast<Fn>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!fn) return false;
  const char* name = fn();
  return name && ::strcasecmp(name, "prescott") == 0 && __builtin_cpu_supports("avx512f");
}

// Returns only if nothing needed changing (or re-execution failed, in which case it runs untuned).
inline void tune_runtime(char** argv) {
  if (std::getenv("DIFFUSE_NO_TUNE") || std::getenv("DIFFUSE_TUNED")) return;
  bool changed = false;
  if (!std::getenv("OMP_WAIT_POLICY")) {
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    changed = true;
  }
  if (!std::getenv("OPENBLAS_CORETYPE") && openblas_fell_back_to_prescott()) {
    ::setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    changed = true;
  }
  if (!changed) return;
  ::setenv("DIFFUSE_TUNED", "1", 1);
  ::execv("/proc/self/exe", argv);
}

}  // namespace diffuse
