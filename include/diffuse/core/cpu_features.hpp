#pragma once
// What the x86-64 CPU this runs on can execute, and which of it the library's own kernels may use,
// for the kernels that pick an instruction set at run time (nn/cpu_linear.hpp,
// nn/row_block_attention.hpp, nn/cpu_lanes.hpp's spans, nn/linear_weight_layout.hpp) and for
// core/runtime_tuning.hpp (torch-free). __builtin_cpu_supports reads a table the runtime fills once
// at load time, so asking on every call costs a load and a test. False on other architectures and
// compilers.
//
// DIFFUSE_CPU_KERNELS=generic makes every such choice as on a CPU without AVX-512, whatever this
// one has: LibTorch's products and attention instead of the AVX-512 kernels, Linear weights kept as
// stored, the element-wise spans' AVX2 version, and no OpenBLAS kernel override in tune_runtime.
// Unset or "native": the CPU decides. The test suite runs once each way (.ci/run), so a result
// that holds with one set of kernels only fails on every machine (docs/testing.md).
#include <cstdlib>
#include <string>
#include <strings.h>

#include "diffuse/core/error.hpp"

namespace diffuse {

// AVX-512 Foundation: what the float32 kernels of nn/ use.
inline bool cpu_has_avx512f() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

// F, DQ, BW and VL: what OpenBLAS's SkylakeX kernels use.
inline bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

// F, BW and BF16 (vdpbf16ps, vcvtne2ps2bf16): Cooper Lake, Sapphire Rapids and later Xeons, AMD
// Zen 4 and Zen 5.
inline bool cpu_has_avx512_bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

// AVX2: the element-wise spans' middle version.
inline bool cpu_has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

// AMX tiles for bfloat16 (Sapphire Rapids and later Xeons), where the OS enables them.
inline bool cpu_has_amx_bf16() {
#if defined(__x86_64__) && defined(__GNUC__) && __GNUC__ >= 11
  return __builtin_cpu_supports("amx-bf16");
#else
  return false;
#endif
}

// A value of DIFFUSE_CPU_KERNELS: true for "generic", false for none (null), "" or "native"
// (case-insensitive); any other value is an error that names the variable.
inline bool cpu_kernels_generic_value(const char* v) {
  if (!v || !*v || ::strcasecmp(v, "native") == 0) return false;
  if (::strcasecmp(v, "generic") == 0) return true;
  throw InputError(std::string("DIFFUSE_CPU_KERNELS=") + v +
                   ": must be native (the CPU decides) or generic (no AVX-512 kernels)");
}

// DIFFUSE_CPU_KERNELS of this process, read once at first use: kernels ask per call (the attention
// per block of 8 rows), and one answer for the whole run keeps its kernels consistent.
inline bool cpu_kernels_generic() {
  static const bool generic = cpu_kernels_generic_value(std::getenv("DIFFUSE_CPU_KERNELS"));
  return generic;
}

// What the library's kernels may use: the CPU's features unless DIFFUSE_CPU_KERNELS=generic.
inline bool use_avx512f() { return cpu_has_avx512f() && !cpu_kernels_generic(); }
inline bool use_avx512() { return cpu_has_avx512() && !cpu_kernels_generic(); }
inline bool use_avx512_bf16() { return cpu_has_avx512_bf16() && !cpu_kernels_generic(); }

}  // namespace diffuse
