#pragma once
// precision "auto": bfloat16 mixed precision where the CPU has bf16 matrix instructions that run
// faster than its float32 ones, decided from the CPU's features, not from a timing, so the same
// machine gives the same answer every run (a 0.1 s timing probe gave 1.06x, 1.24x and 2.09x in
// three runs on one idle AMD EPYC: issue 29, docs/experiments/training_log.md). This header is torch-free.
//
// The rule follows what Debian's LibTorch 1.13 (oneDNN) measured on the three kinds of machine the
// project has run on (docs/performance.md, docs/experiments/training_log.md):
//  - AMX-BF16 (Xeons from Sapphire Rapids on): bf16 products 2-3x the float32 rate, the shapes
//    model's bf16 step 1.7x faster;
//  - AVX512-BF16 on an AMD CPU: bf16 products 1.9-2.1x on Zen 5 (measured); Zen 4 runs vdpbf16ps
//    on the units of its float32 FMAs with twice the products each, so ~2x is expected (unmeasured);
//  - AVX512-BF16 on an Intel CPU without AMX (Cooper Lake; Xeon family 6 model 207 with AMX
//    masked): bf16 products 0.55-0.7x, the bf16 step 1.23x slower;
//  - neither: bf16 products are emulated, f32.
// DIFFUSE_CPU_KERNELS=generic (core/cpu_features.hpp) counts as a CPU without AVX-512 or AMX.
#include <string>

#include "diffuse/core/cpu_features.hpp"

namespace diffuse::training {

struct PrecisionChoice {
  std::string precision;  // "f32" or "bf16"
  std::string reason;     // the features that decided it, for the run's log
};

// What the rule reads of a CPU.
struct Bf16Features {
  bool amx_bf16 = false, avx512_bf16 = false, amd = false;
};

inline PrecisionChoice precision_for(const Bf16Features& f) {
  if (f.amx_bf16) return {"bf16", "AMX-BF16: bf16 products run 2-3x the float32 rate"};
  if (f.avx512_bf16 && f.amd) return {"bf16", "AVX512-BF16 on an AMD CPU: bf16 products run ~2x the float32 rate"};
  if (f.avx512_bf16) return {"f32", "AVX512-BF16 without AMX on an Intel CPU: bf16 products run at 0.55-0.7x float32"};
  return {"f32", "no bf16 matrix instructions (or DIFFUSE_CPU_KERNELS=generic): bf16 products would be emulated"};
}

inline Bf16Features this_cpu_bf16_features() {
  Bf16Features f;
  if (cpu_kernels_generic()) return f;
  f.amx_bf16 = cpu_has_amx_bf16();
  f.avx512_bf16 = cpu_has_avx512_bf16();
#if defined(__x86_64__) && defined(__GNUC__)
  f.amd = __builtin_cpu_is("amd");
#endif
  return f;
}

// "auto" on this CPU.
inline PrecisionChoice choose_precision() { return precision_for(this_cpu_bf16_features()); }

}  // namespace diffuse::training
