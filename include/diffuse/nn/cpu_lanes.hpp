#pragma once
// Sixteen-lane float vectors for the CPU kernels of nn/ (gelu_tanh.hpp, modulation.hpp) and
// training/flat_adamw.hpp: load and store of float32 and bfloat16, exp, sqrt, and the dispatch
// that compiles each kernel for AVX-512, AVX2 and baseline x86-64 and picks one at run time.
//
// Why vectors by hand: with the default -ftrapping-math / -fmath-errno GCC 12 does not vectorise
// loops with a clamp or a sqrt, and a header-only library cannot choose its users' flags.
#include <bit>
#include <cstdint>
#include <cstring>

#include <c10/util/BFloat16.h>

#include "diffuse/core/cpu_features.hpp"

namespace diffuse::nn::lanes_detail {

// Sixteen float lanes as a GCC vector type: written once, lowered to whatever the target has
// (four SSE registers by default, one AVX-512 register). Plain scalar loops would not vectorise
// here: with the default -ftrapping-math GCC 12 refuses to if-convert the clamp.
using vf = float __attribute__((vector_size(64)));
using vi = std::int32_t __attribute__((vector_size(64)));
using vu = std::uint32_t __attribute__((vector_size(64)));
using vh = std::uint16_t __attribute__((vector_size(32)));
constexpr int lanes = 16;
// Helpers are forced inline so that each span compiles them for the level it is dispatched to.
#define DIFFUSE_LANES_INLINE [[gnu::always_inline]] inline

// x clamped to [-neg, pos], on the bits: a float compare would keep GCC from vectorising under
// -ftrapping-math, an integer compare of the magnitude does not. NaN becomes pos (callers that
// need NaN to propagate carry it through another operand).
DIFFUSE_LANES_INLINE void clamp_magnitude(vf& x, float neg, float pos) {
  const vi b = __builtin_bit_cast(vi, x);
  const vi mag = b & 0x7fffffff;
  const vi lim = b < 0 ? vi{} + std::bit_cast<std::int32_t>(neg) : vi{} + std::bit_cast<std::int32_t>(pos);
  x = __builtin_bit_cast(vf, (b & static_cast<std::int32_t>(0x80000000u)) | (mag < lim ? mag : lim));
}

// x = exp(x), clamped to the finite float range; Cephes expf (S. Moshier): x = n ln2 + r with ln 2
// in two parts, exp(r) by a degree-6 polynomial on [-ln2/2, ln2/2] (relative error ~1e-7), 2^n by
// building the exponent bits.
DIFFUSE_LANES_INLINE void exp_in_place(vf& x) {
  clamp_magnitude(x, 87.0f, 88.0f);
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2): the 1.5 * 2^23 trick
  vf r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const vf r2 = r * r;
  vf p = vf{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const vi e = (__builtin_convertvector(n, vi) + 127) << 23;  // 2^n
  x = p * __builtin_bit_cast(vf, e);
}

// x = sqrt(x) for x >= 0 without a sqrt instruction (GCC will not vectorise std::sqrt under
// -fmath-errno): the bit-level estimate of 1 / sqrt(x) (relative error < 3.5%; C. Lomont, "Fast
// inverse square root", 2003, constant 0x5f375a86), three Newton steps y (3 - x y^2) / 2, each
// squaring the error (3.5e-2 -> 1.8e-3 -> 5e-6 -> float rounding), then sqrt(x) = x / sqrt(x).
// x = 0 gives 0. Subnormal x come out up to ~3x too small (the estimate starts too far off for
// three steps); callers add an epsilon far above them.
DIFFUSE_LANES_INLINE void sqrt_in_place(vf& x) {
  vf y = __builtin_bit_cast(vf, 0x5f375a86 - (__builtin_bit_cast(vi, x) >> 1));
  const vf half = x * 0.5f;
  y = y * (1.5f - half * y * y);
  y = y * (1.5f - half * y * y);
  y = y * (1.5f - half * y * y);
  x = x * y;
}

DIFFUSE_LANES_INLINE void load(const float* p, vf& v) { std::memcpy(&v, p, sizeof v); }
DIFFUSE_LANES_INLINE void load(const c10::BFloat16* p, vf& v) {
  vh h;
  std::memcpy(&h, p, sizeof h);
  v = __builtin_bit_cast(vf, __builtin_convertvector(h, vu) << 16);
}
DIFFUSE_LANES_INLINE void store(float* p, const vf& v) { std::memcpy(p, &v, sizeof v); }
DIFFUSE_LANES_INLINE void store(c10::BFloat16* p, const vf& v) {
  // round to nearest even, as c10::BFloat16 does; a NaN stays a (quiet) NaN
  const vu u = __builtin_bit_cast(vu, v);
  const vu rounded = u + 0x7fffu + ((u >> 16) & 1u);
  const vu out = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u) : rounded;
  const vh h = __builtin_convertvector(out >> 16, vh);
  std::memcpy(p, &h, sizeof h);
}

// Each span (a function marked DIFFUSE_CPU_SPAN) is compiled for several x86 levels where it is
// called through DIFFUSE_CPU_DISPATCH, which picks one at run time: AVX-512 where the library may
// use it (core/cpu_features.hpp: not under DIFFUSE_CPU_KERNELS=generic), else AVX2 where the CPU
// has it, else baseline x86-64 (SSE2, 5x slower here than AVX-512). The span is forced inline into
// a wrapper compiled for the chosen level. The levels round differently (AVX-512 contracts a * b +
// c into one FMA, AVX2 without FMA does not), which is why the choice must be switchable for the
// tests. (GCC's target_clones did this before, with no way to choose for a test run.)
#define DIFFUSE_CPU_SPAN DIFFUSE_LANES_INLINE

enum class SpanLevel { Baseline, Avx2, Avx512 };

inline SpanLevel span_level() {
  if (use_avx512f()) return SpanLevel::Avx512;
  if (cpu_has_avx2()) return SpanLevel::Avx2;
  return SpanLevel::Baseline;
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
template <class F>
__attribute__((target("avx512f"))) void run_avx512(const F& f) {
  f();
}
template <class F>
__attribute__((target("avx2"))) void run_avx2(const F& f) {
  f();
}
template <class F>
void dispatch(const F& f) {
  switch (span_level()) {
    case SpanLevel::Avx512: run_avx512(f); return;
    case SpanLevel::Avx2: run_avx2(f); return;
    default: f();
  }
}
#define DIFFUSE_CPU_DISPATCH(...) \
  ::diffuse::nn::lanes_detail::dispatch([&]() __attribute__((always_inline)) { __VA_ARGS__; })
#else
#define DIFFUSE_CPU_DISPATCH(...) __VA_ARGS__
#endif

// Vector helpers take and give their lanes by reference: GCC warns (-Wpsabi) at the end of every
// translation unit about functions that pass such vectors by value, even inlined ones.

DIFFUSE_LANES_INLINE float sum_lanes(const vf& v) {
  float s = 0;
  for (int k = 0; k < lanes; ++k) s += v[k];
  return s;
}

}  // namespace diffuse::nn::lanes_detail
