#pragma once
// Process-level settings that decide CPU speed with Debian's LibTorch (torch-free; measured on the
// CI machine kind, docs/performance.md):
//  - OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads otherwise spin after each parallel region and
//    compete with OpenBLAS's own pthreads for the 2 cores; an fp32 MM-DiT forward went from 36% to
//    72-96% of the GEMM rate.
//  - OPENBLAS_CORETYPE=SkylakeX when OpenBLAS 0.3.21 runs kernels without AVX-512 on a CPU that
//    has it: it falls back to Prescott (SSE3) on the Xeons it does not recognise (fp32 GEMM 35 ->
//    220 GFLOP/s). Any other non-AVX-512 set counts too: on an AMD EPYC (Zen 5, which OpenBLAS
//    detects as Cooperlake) the Haswell (AVX2) set, forced by an inherited OPENBLAS_CORETYPE, ran
//    at 183-209 against 355-380 GFLOP/s (docs/performance.md).
//  - GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc 2.35+; older ones ignore it): malloc asks for
//    transparent huge pages (madvise) on the memory it maps. On this VM kind a first write to a
//    4 KiB page costs ~4-15 us, so filling fresh memory ran at 0.3-0.5 GB/s: loading SD3-medium
//    (7.7 GB of converted weights) 21.5 -> 9.2 s, the VAE decode 3.7 -> 1.9 s (docs/generate.md).
// All are read when the libraries load, before main, so `tune_runtime(argv)` sets what is unset
// and re-executes the program once. A variable already set is never changed; DIFFUSE_NO_TUNE=1
// turns the whole thing off, and DIFFUSE_CPU_KERNELS=generic (core/cpu_features.hpp) the OpenBLAS
// part (OpenBLAS then runs what it detects or what OPENBLAS_CORETYPE says). Programs call it first
// thing in main; the library never calls it.
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <strings.h>

#include "diffuse/core/cpu_features.hpp"

namespace diffuse {

// Whether OpenBLAS's kernel set `core` (openblas_get_corename()) leaves out AVX-512 on a CPU whose
// AVX-512 (F, DQ, BW, VL: what the SkylakeX kernels use) it could run. OpenBLAS 0.3.21's AVX-512
// kernel sets are SkylakeX, Cooperlake and SapphireRapids; any other name on such a CPU is a
// fallback (Prescott, Haswell, Zen, ...).
inline bool openblas_core_lacks_avx512(const char* core, bool cpu_has_avx512) {
  if (!core || !*core || !cpu_has_avx512) return false;
  for (const char* avx512_core : {"skylakex", "cooperlake", "sapphirerapids"})
    if (::strcasecmp(core, avx512_core) == 0) return false;
  return true;
}

// The loaded OpenBLAS's kernel set, where it is a DYNAMIC_ARCH build (which has
// openblas_get_corename); null where there is none (MKL, Accelerate).
inline const char* openblas_core_name() {
  using Fn = char* (*)();
  auto fn = reinterpret_cast<Fn>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return fn ? fn() : nullptr;
}
// The loaded OpenBLAS runs without AVX-512 on an AVX-512 CPU.
inline bool openblas_without_avx512() { return openblas_core_lacks_avx512(openblas_core_name(), use_avx512()); }

// For benchmarks that compare against the BLAS's GEMM rate: a line saying that rate is not the
// machine's, when OpenBLAS runs without AVX-512 on an AVX-512 CPU (e.g. an inherited
// OPENBLAS_CORETYPE=Haswell, which tune_runtime leaves alone); empty otherwise.
inline std::string blas_baseline_note() {
  if (!openblas_without_avx512()) return {};
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  return std::string("note: OpenBLAS runs its ") + openblas_core_name() + " kernels (no AVX-512) on this AVX-512 CPU" +
         (forced ? std::string(" because OPENBLAS_CORETYPE=") + forced + " is set" : std::string()) +
         ": its GEMM rate is not the machine's; unset the variable (or set SkylakeX) to measure against it";
}

// GLIBC_TUNABLES with malloc's transparent huge pages asked for: `current` (the variable's value,
// or null) with glibc.malloc.hugetlb=1 added, or empty when it names hugetlb already (kept as is).
inline std::string tunables_with_huge_pages(const char* current) {
  const std::string now = current ? current : "";
  if (now.find("glibc.malloc.hugetlb") != std::string::npos) return {};
  return now.empty() ? "glibc.malloc.hugetlb=1" : now + ":glibc.malloc.hugetlb=1";
}

// Returns only if nothing needed changing (or re-execution failed, in which case it runs untuned).
inline void tune_runtime(char** argv) {
  if (std::getenv("DIFFUSE_NO_TUNE") || std::getenv("DIFFUSE_TUNED")) return;
  bool changed = false;
  if (!std::getenv("OMP_WAIT_POLICY")) {
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    changed = true;
  }
  if (!std::getenv("OPENBLAS_CORETYPE") && openblas_without_avx512()) {
    ::setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    changed = true;
  }
  if (const auto t = tunables_with_huge_pages(std::getenv("GLIBC_TUNABLES")); !t.empty()) {
    ::setenv("GLIBC_TUNABLES", t.c_str(), 1);
    changed = true;
  }
  if (!changed) return;
  ::setenv("DIFFUSE_TUNED", "1", 1);
  ::execv("/proc/self/exe", argv);
}

}  // namespace diffuse
