#pragma once
// precision "auto": measure, on this machine, whether bfloat16 matrix products pay for mixed
// precision's casts. Why: the same Debian LibTorch runs bf16 GEMMs through oneDNN at 2-3x the
// float32 rate where the CPU exposes AMX, but at 0.55-0.7x where it has AVX512-BF16 only (both
// kinds were handed out as "the CI machine"; docs/performance.md). The shapes model's bf16 step was
// 1.7x faster than f32 on the first kind and 1.23x slower on the second (benchmarks/train_step.cpp).
#include <algorithm>
#include <chrono>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "diffuse/core/error.hpp"

namespace diffuse::training {

struct PrecisionChoice {
  std::string precision;       // "f32" or "bf16"
  double bf16_speedup = 1.0;   // bf16 GEMM rate / f32 GEMM rate at the probed shape
};

// bf16 must run the (rows x k) @ (k x n) product at least this much faster than f32: the casts of
// weights and activations around each product cost ~10-15% of the shapes model's step
// (docs/training.md), and a bf16 step has the products' rounding on top.
inline constexpr double bf16_speedup_needed = 1.3;

// The best of a few timed products in each dtype, interleaved so that a busy moment on a shared
// machine hits both; ~0.1 s at the default 1024^3 product. The probe detects the kind of machine,
// not the model: products of ~1 ms (a small model's own shapes) flipped between runs on a quiet
// host, 1024^3 gave 0.29-0.56x here, far from the threshold either way.
inline PrecisionChoice choose_precision(std::int64_t rows = 1024, std::int64_t k = 1024, std::int64_t n = 1024,
                                        int repeats = 3) {
  if (rows < 1 || k < 1 || n < 1) throw InputError("choose_precision: the probe shape must be positive");
  auto gen = at::detail::createCPUGenerator(0);  // its own generator: the probe leaves the global seed's stream alone
  const auto a = at::randn({rows, k}, gen), b = at::randn({k, n}, gen);
  const auto a16 = a.to(at::kBFloat16), b16 = b.to(at::kBFloat16);
  auto c = at::empty({rows, n}), c16 = at::empty({rows, n}, at::kBFloat16);
  auto time = [](auto&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  at::mm_out(c, a, b), at::mm_out(c16, a16, b16);  // warm-up: oneDNN builds its kernels on first use
  double f32 = 1e30, bf16 = 1e30;
  for (int r = 0; r < repeats; ++r) {
    f32 = std::min(f32, time([&] { at::mm_out(c, a, b); }));
    bf16 = std::min(bf16, time([&] { at::mm_out(c16, a16, b16); }));
  }
  const double speedup = f32 / bf16;
  return {speedup >= bf16_speedup_needed ? "bf16" : "f32", speedup};
}

}  // namespace diffuse::training
