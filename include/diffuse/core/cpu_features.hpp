#pragma once
// What the x86-64 CPU this runs on can execute, for the kernels that pick an instruction set at run
// time (nn/cpu_linear.hpp, nn/row_block_attention.hpp, nn/linear_weight_layout.hpp) and for
// core/runtime_tuning.hpp. Torch-free. __builtin_cpu_supports reads a table the runtime fills once
// at load time, so asking on every call costs a load and a test. False on other architectures and
// compilers.
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

}  // namespace diffuse
