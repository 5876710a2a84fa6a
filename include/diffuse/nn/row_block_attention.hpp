#pragma once
// Inference attention on the CPU for heads of 64 (every SD3 model and text encoder), computed a
// block of 8 query rows at a time: the block's scores (8 x Lk floats) stay in L1/L2, are
// softmaxed in place and multiplied by V before the next block, and each block writes straight
// into the (B, L, heads * 64) output. Why: LibTorch 1.13's bmm runs the 24 per-head products of an
// SD3 layer one after another, each too small to keep both cores busy, and the scores make a round
// trip through memory: ~100 GFLOP/s in f32 and bf16, against ~190 here for SD3's 410 and 1178
// tokens (docs/performance.md; ~300 for a large f32 GEMM). Blocks of (head, query rows) are
// independent, so at::parallel_for hands whole blocks to each thread (which needs the including code
// built with OpenMP: CMakeLists.txt). Products accumulate in float32. bfloat16 inputs go to
// block_dot_bf16 on a CPU with AVX512-BF16 (2x the widening path below on the AMD EPYC kind) and
// are otherwise widened once, when K and V are packed; either way bf16 results are at least as
// close to exact as bf16 bmm's.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <torch/types.h>

#include "diffuse/core/cpu_features.hpp"
#include "diffuse/nn/cpu_lanes.hpp"

namespace diffuse::nn {

namespace row_block_detail {

using namespace lanes_detail;

constexpr std::int64_t head_dim = 64;
constexpr int dim_lanes = head_dim / lanes;  // 4 vectors a row
constexpr int block_rows = 8;                // query rows a block
constexpr std::int64_t panel = 2 * lanes;    // keys a score panel (two vectors)

// A row of n elements of T widened into float.
template <class T>
DIFFUSE_LANES_INLINE void widen(const T* src, float* dst, std::int64_t n) {
  for (std::int64_t c = 0; c < n; ++c) dst[c] = static_cast<float>(src[c]);
}

// v = x in every lane, written so that GCC loads it with one broadcast from memory (vf{} + x costs
// an add and a register broadcast, which competes with the multiply-adds for the same port).
DIFFUSE_LANES_INLINE void splat(const float& x, vf& v) {
  static_assert(lanes == 16);
  v = vf{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
}

// K of one head, transposed into panels of 32 keys: kt[p][d][c] = k[32 p + c][d], zero past Lk, so
// the score loop reads each panel contiguously. V of one head packed as (Lk, 64) floats.
template <class T>
void pack_head(const T* k, const T* v, std::int64_t row_stride, std::int64_t lk, std::int64_t panels, float* kt,
               float* vp) {
  std::fill(kt, kt + panels * head_dim * panel, 0.0f);
  float row[head_dim];
  for (std::int64_t j = 0; j < lk; ++j) {
    widen(k + j * row_stride, row, head_dim);
    float* dst = kt + (j / panel) * head_dim * panel + (j % panel);
    for (std::int64_t d = 0; d < head_dim; ++d) dst[d * panel] = row[d];
    widen(v + j * row_stride, vp + j * head_dim, head_dim);
  }
}

// Softmax of n score rows in place (row stride ld >= lk, a multiple of 16), the scale folded into
// the exponent; keys past lk get weight 0. The normalisation is left to the caller, which applies
// inv_sum to the output rows (64 values) instead of the weights (lk values).
DIFFUSE_LANES_INLINE void softmax_rows(float* s, std::int64_t ld, std::int64_t lk, int n, float scale, float* inv_sum) {
  for (int r = 0; r < n; ++r) {
    float* row = s + r * ld;
    for (std::int64_t j = lk; j < ld; ++j) row[j] = -std::numeric_limits<float>::infinity();
    vf m = vf{} - std::numeric_limits<float>::infinity(), x;
    vi nan{};
    for (std::int64_t j = 0; j < ld; j += lanes) {
      load(row + j, x);
      m = x > m ? x : m;
      nan |= x != x;
    }
    float mx = m[0];
    for (int c = 1; c < lanes; ++c) mx = std::max(mx, m[c]);
    vf sum{};
    for (std::int64_t j = 0; j < ld; j += lanes) {
      load(row + j, x);
      x = (x - mx) * scale;
      exp_in_place(x);
      sum += x;
      store(row + j, x);
    }
    for (std::int64_t j = lk; j < ld; ++j) sum[0] -= row[j], row[j] = 0.0f;  // exp(-inf) is clamped, not 0
    inv_sum[r] = 1.0f / sum_lanes(sum);
    for (int c = 0; c < lanes; ++c)
      if (nan[c]) inv_sum[r] = std::numeric_limits<float>::quiet_NaN();  // a NaN score poisons its row, as in softmax
  }
}

// One block of n <= 8 query rows of one head: out rows = softmax(scale q k^T) v. s is scratch of
// block_rows x (panels * 32) floats.
template <class T>
DIFFUSE_CPU_SPAN void block(const T* q, std::int64_t q_stride, int n, const float* kt, const float* vp,
                              std::int64_t lk, std::int64_t panels, float scale, float* s, T* out,
                              std::int64_t out_stride) {
  const std::int64_t ld = panels * panel;
  alignas(64) float qb[block_rows][head_dim] = {};
  for (int r = 0; r < n; ++r) widen(q + r * q_stride, qb[r], head_dim);

  // Scores: 8 rows x 32 keys in 16 accumulators, one broadcast q value against two K vectors.
  for (std::int64_t p = 0; p < panels; ++p) {
    const float* kp = kt + p * head_dim * panel;
    vf acc[block_rows][2] = {};
    for (std::int64_t d = 0; d < head_dim; ++d) {
      vf k0, k1;
      load(kp + d * panel, k0);
      load(kp + d * panel + lanes, k1);
#pragma GCC unroll 8
      for (int r = 0; r < block_rows; ++r) {
        vf qv;
        splat(qb[r][d], qv);
        acc[r][0] += qv * k0;
        acc[r][1] += qv * k1;
      }
    }
    for (int r = 0; r < block_rows; ++r) {
      store(s + r * ld + p * panel, acc[r][0]);
      store(s + r * ld + p * panel + lanes, acc[r][1]);
    }
  }

  float inv_sum[block_rows] = {};
  softmax_rows(s, ld, lk, n, scale, inv_sum);

  // Weights times V: 4 rows x 64 outputs in 16 accumulators, one broadcast weight against a V row.
  for (int r0 = 0; r0 < n; r0 += 4) {
    vf acc[4][dim_lanes] = {};
    for (std::int64_t j = 0; j < lk; ++j) {
      vf vr[dim_lanes];
      for (int c = 0; c < dim_lanes; ++c) load(vp + j * head_dim + c * lanes, vr[c]);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        vf w;
        splat(s[(r0 + r) * ld + j], w);
        for (int c = 0; c < dim_lanes; ++c) acc[r][c] += w * vr[c];
      }
    }
    for (int r = 0; r < 4 && r0 + r < n; ++r)
      for (int c = 0; c < dim_lanes; ++c) store(out + (r0 + r) * out_stride + c * lanes, acc[r][c] * inv_sum[r0 + r]);
  }
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DIFFUSE_ROW_BLOCK_AVX512 1
// The same block with AVX-512 intrinsics: each multiply-add takes its q (or weight) value as a
// broadcast memory operand. The generic version above makes GCC build every broadcast in a
// register first (an add and a shuffle on the multiply-add port), which measured 2.5x slower.
template <class T>
__attribute__((target("avx512f"))) void block_avx512(const T* q, std::int64_t q_stride, int n, const float* kt,
                                                      const float* vp, std::int64_t lk, std::int64_t panels,
                                                      float scale, float* s, T* out, std::int64_t out_stride) {
  const std::int64_t ld = panels * panel;
  alignas(64) float qb[block_rows][head_dim] = {};
  for (int r = 0; r < n; ++r) widen(q + r * q_stride, qb[r], head_dim);
  for (std::int64_t p = 0; p < panels; ++p) {
    const float* kp = kt + p * head_dim * panel;
    __m512 acc[block_rows][2];
    for (int r = 0; r < block_rows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (std::int64_t d = 0; d < head_dim; ++d) {
      const __m512 k0 = _mm512_loadu_ps(kp + d * panel), k1 = _mm512_loadu_ps(kp + d * panel + lanes);
#pragma GCC unroll 8
      for (int r = 0; r < block_rows; ++r) {
        const __m512 qv = _mm512_set1_ps(qb[r][d]);
        acc[r][0] = _mm512_fmadd_ps(qv, k0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(qv, k1, acc[r][1]);
      }
    }
    for (int r = 0; r < block_rows; ++r) {
      _mm512_storeu_ps(s + r * ld + p * panel, acc[r][0]);
      _mm512_storeu_ps(s + r * ld + p * panel + lanes, acc[r][1]);
    }
  }
  float inv_sum[block_rows] = {};
  softmax_rows(s, ld, lk, n, scale, inv_sum);
  for (int r0 = 0; r0 < n; r0 += 4) {
    __m512 acc[4][dim_lanes];
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < dim_lanes; ++c) acc[r][c] = _mm512_setzero_ps();
    for (std::int64_t j = 0; j < lk; ++j) {
      __m512 vr[dim_lanes];
      for (int c = 0; c < dim_lanes; ++c) vr[c] = _mm512_loadu_ps(vp + j * head_dim + c * lanes);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const __m512 w = _mm512_set1_ps(s[(r0 + r) * ld + j]);
        for (int c = 0; c < dim_lanes; ++c) acc[r][c] = _mm512_fmadd_ps(w, vr[c], acc[r][c]);
      }
    }
    for (int r = 0; r < 4 && r0 + r < n; ++r)
      for (int c = 0; c < dim_lanes; ++c) {
        vf o = __builtin_bit_cast(vf, _mm512_mul_ps(acc[r][c], _mm512_set1_ps(inv_sum[r0 + r])));
        store(out + (r0 + r) * out_stride + c * lanes, o);
      }
  }
}

// bfloat16 on a CPU with AVX512-BF16 (Zen 4/5, Cooper Lake, Sapphire Rapids): vdpbf16ps multiplies
// pairs of bf16 and adds both products into a float32 lane, twice the multiply-adds of the float32
// block above per instruction, and reads q, K and V without widening them. Measured on the AMD EPYC
// (Zen 5) kind: docs/performance.md. Scores are exact products of the bf16 inputs summed in float32,
// as above; the softmax weights are rounded to bf16 (RNE) for the product with V, as a bf16 bmm
// would, which adds at most 2^-9 of max|v| to an output that is itself rounded to bf16.
//
// Layouts (bf16 as raw 16-bit words, a pair as one 32-bit word):
//   K of one head in panels of 32 keys: kt[p][d/2][c] = (k[32 p + c][d], k[32 p + c][d + 1]),
//   V of one head in key pairs: vt[j/2][e][2] = (v[j][e], v[j + 1][e]); zero past Lk in both.
DIFFUSE_LANES_INLINE std::uint32_t bf16_pair(const std::uint16_t* p) {
  std::uint32_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

inline void pack_head_bf16(const std::uint16_t* k, const std::uint16_t* v, std::int64_t row_stride, std::int64_t lk,
                           std::int64_t panels, std::uint32_t* kt, std::uint16_t* vt) {
  constexpr std::int64_t pairs = head_dim / 2;
  std::fill(kt, kt + panels * pairs * panel, 0u);
  const std::int64_t key_pairs = (lk + 1) / 2;
  std::fill(vt, vt + key_pairs * 2 * head_dim, std::uint16_t{0});
  for (std::int64_t j = 0; j < lk; ++j) {
    std::uint32_t* dst = kt + (j / panel) * pairs * panel + (j % panel);
    const std::uint16_t* kr = k + j * row_stride;
    for (std::int64_t d = 0; d < pairs; ++d) dst[d * panel] = bf16_pair(kr + 2 * d);
    const std::uint16_t* vr = v + j * row_stride;
    std::uint16_t* vd = vt + (j / 2) * 2 * head_dim + (j % 2);
    for (std::int64_t e = 0; e < head_dim; ++e) vd[2 * e] = vr[e];
  }
}

// Lanes of a 16-key vector that hold keys < lk, for `valid` = lk minus the vector's first key.
DIFFUSE_LANES_INLINE __mmask16 key_mask(std::int64_t valid) {
  return valid >= lanes ? __mmask16(0xffff) : valid <= 0 ? __mmask16(0) : __mmask16((1u << valid) - 1);
}

// 2^t for t <= 0, to ~3e-6 relative, far below the bf16 rounding (2^-9) of the weights it makes:
// t = n + f with n = round(t), |f| <= 1/2, 2^f by its Taylor polynomial of degree 5 (the sixth term
// is at most (ln 2 / 2)^6 / 720 = 2.4e-6), times 2^n by vscalefps, which also flushes 2^n for t
// below the float range to 0. t is first kept above -200 so that -inf gives 0, not NaN. Five
// multiply-adds and three other operations against the ~20 of exp_in_place.
__attribute__((target("avx512f"))) inline __m512 exp2_bf16(__m512 t) {
  t = _mm512_max_ps(t, _mm512_set1_ps(-200.0f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  // (ln 2)^k / k!, k = 5 ... 1
  __m512 p = _mm512_set1_ps(1.3333558e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void block_dot_bf16(
    const std::uint16_t* q, std::int64_t q_stride, int n, const std::uint32_t* kt, const std::uint16_t* vt,
    std::int64_t lk, std::int64_t panels, float scale, float* s, std::uint16_t* w, c10::BFloat16* out,
    std::int64_t out_stride) {
  constexpr std::int64_t pairs = head_dim / 2;
  const std::int64_t ld = panels * panel;
  alignas(64) std::uint32_t qb[block_rows][pairs] = {};
  for (int r = 0; r < n; ++r) std::memcpy(qb[r], q + r * q_stride, head_dim * sizeof(std::uint16_t));
  // Scores: 8 rows x 32 keys in 16 accumulators, one broadcast q pair against two K pair vectors.
  // Each row's maximum (over keys < lk) and whether it holds a NaN are gathered on the way.
  __m512 row_max[block_rows];
  __mmask16 nan[block_rows] = {};
  for (int r = 0; r < block_rows; ++r) row_max[r] = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (std::int64_t p = 0; p < panels; ++p) {
    const std::uint32_t* kp = kt + p * pairs * panel;
    __m512 acc[block_rows][2];
    for (int r = 0; r < block_rows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (std::int64_t d = 0; d < pairs; ++d) {
      const auto k0 = (__m512bh)_mm512_loadu_si512(kp + d * panel);
      const auto k1 = (__m512bh)_mm512_loadu_si512(kp + d * panel + lanes);
#pragma GCC unroll 8
      for (int r = 0; r < block_rows; ++r) {
        const auto qv = (__m512bh)_mm512_set1_epi32(static_cast<int>(qb[r][d]));
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], qv, k0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], qv, k1);
      }
    }
    const __mmask16 m0 = key_mask(lk - p * panel), m1 = key_mask(lk - p * panel - lanes);
    for (int r = 0; r < block_rows; ++r) {
      _mm512_storeu_ps(s + r * ld + p * panel, acc[r][0]);
      _mm512_storeu_ps(s + r * ld + p * panel + lanes, acc[r][1]);
      row_max[r] = _mm512_mask_max_ps(row_max[r], m0, row_max[r], acc[r][0]);
      row_max[r] = _mm512_mask_max_ps(row_max[r], m1, row_max[r], acc[r][1]);
      nan[r] |= _mm512_mask_cmp_ps_mask(m0, acc[r][0], acc[r][0], _CMP_UNORD_Q) |
                _mm512_mask_cmp_ps_mask(m1, acc[r][1], acc[r][1], _CMP_UNORD_Q);
    }
  }
  // Softmax numerators exp(scale (s - max)) straight into bf16 weights (0 past lk), 32 at a time;
  // the normalisation goes on the 64 outputs of a row instead of its lk weights.
  float inv_sum[block_rows] = {};
  const __m512 c = _mm512_set1_ps(scale * 1.4426950408889634f);  // exp(x) = 2^(x log2 e)
  for (int r = 0; r < n; ++r) {
    const __m512 mc = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(row_max[r])), c);
    __m512 sum = _mm512_setzero_ps();
    for (std::int64_t j = 0; j < ld; j += 2 * lanes) {
      const float* row = s + r * ld + j;
      const __m512 e0 = _mm512_maskz_mov_ps(key_mask(lk - j), exp2_bf16(_mm512_fmsub_ps(_mm512_loadu_ps(row), c, mc)));
      const __m512 e1 =
          _mm512_maskz_mov_ps(key_mask(lk - j - lanes), exp2_bf16(_mm512_fmsub_ps(_mm512_loadu_ps(row + lanes), c, mc)));
      sum = _mm512_add_ps(sum, _mm512_add_ps(e0, e1));
      _mm512_storeu_si512(w + r * ld + j, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
    }
    // a NaN score poisons its row, as in softmax
    inv_sum[r] = nan[r] ? std::numeric_limits<float>::quiet_NaN() : 1.0f / _mm512_reduce_add_ps(sum);
  }
  // Weights times V: 4 rows x 64 outputs in 16 accumulators, one broadcast weight pair against the
  // V pair vectors of two keys.
  const std::int64_t key_pairs = (lk + 1) / 2;
  for (int r0 = 0; r0 < n; r0 += 4) {
    const int rows = std::min(4, n - r0);
    __m512 acc[4][dim_lanes];
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < dim_lanes; ++c) acc[r][c] = _mm512_setzero_ps();
    const std::uint16_t* w0 = w + r0 * ld;
    // rows past n read row r0's weights (their outputs are not stored)
    const std::int64_t row_ld[4] = {0, rows > 1 ? ld : 0, rows > 2 ? 2 * ld : 0, rows > 3 ? 3 * ld : 0};
    for (std::int64_t jp = 0; jp < key_pairs; ++jp) {
      __m512bh vr[dim_lanes];
      for (int c = 0; c < dim_lanes; ++c) vr[c] = (__m512bh)_mm512_loadu_si512(vt + jp * 2 * head_dim + c * 2 * lanes);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const auto wv = (__m512bh)_mm512_set1_epi32(static_cast<int>(bf16_pair(w0 + row_ld[r] + 2 * jp)));
        for (int c = 0; c < dim_lanes; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv, vr[c]);
      }
    }
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < dim_lanes; ++c) {
        vf o = __builtin_bit_cast(vf, _mm512_mul_ps(acc[r][c], _mm512_set1_ps(inv_sum[r0 + r])));
        store(out + (r0 + r) * out_stride + c * lanes, o);
      }
  }
}
#else
#define DIFFUSE_ROW_BLOCK_AVX512 0
#endif

#if DIFFUSE_ROW_BLOCK_AVX512
// The bf16 inputs through block_dot_bf16, where the CPU has AVX512-BF16.
inline void run_dot_bf16(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, torch::Tensor& out,
                         std::int64_t heads) {
  const auto b = q.size(0), lq = q.size(1), lk = k.size(1);
  const auto panels = (lk + panel - 1) / panel, key_pairs = (lk + 1) / 2;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  const std::int64_t stride = heads * head_dim, kt_size = panels * (head_dim / 2) * panel,
                     vt_size = key_pairs * 2 * head_dim;
  std::vector<std::uint32_t> kt(static_cast<std::size_t>(b * heads * kt_size));
  std::vector<std::uint16_t> vt(static_cast<std::size_t>(b * heads * vt_size));
  auto bits = [](const torch::Tensor& x) { return reinterpret_cast<const std::uint16_t*>(x.data_ptr<c10::BFloat16>()); };
  const std::uint16_t *qd = bits(q), *kd = bits(k), *vd = bits(v);
  c10::BFloat16* od = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, b * heads, 1, [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t bh = first; bh < last; ++bh) {
      const auto off = (bh / heads) * lk * stride + (bh % heads) * head_dim;
      pack_head_bf16(kd + off, vd + off, stride, lk, panels, kt.data() + bh * kt_size, vt.data() + bh * vt_size);
    }
  });
  const std::int64_t blocks = (lq + block_rows - 1) / block_rows;
  at::parallel_for(0, b * heads * blocks, 1, [&](std::int64_t first, std::int64_t last) {
    std::vector<float> s(static_cast<std::size_t>(block_rows * panels * panel));
    std::vector<std::uint16_t> w(s.size());
    for (std::int64_t item = first; item < last; ++item) {
      const auto bh = item / blocks, i0 = (item % blocks) * block_rows;
      const int n = static_cast<int>(std::min<std::int64_t>(block_rows, lq - i0));
      const auto row0 = ((bh / heads) * lq + i0) * stride + (bh % heads) * head_dim;
      block_dot_bf16(qd + row0, stride, n, kt.data() + bh * kt_size, vt.data() + bh * vt_size, lk, panels, scale,
                     s.data(), w.data(), od + row0, stride);
    }
  });
}
#endif

template <class T>
void run(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, torch::Tensor& out,
         std::int64_t heads) {
  const auto b = q.size(0), lq = q.size(1), lk = k.size(1);
  const auto panels = (lk + panel - 1) / panel;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  const std::int64_t kv_stride = heads * head_dim, q_stride = heads * head_dim;
  std::vector<float> kt(static_cast<std::size_t>(b * heads * panels * head_dim * panel));
  std::vector<float> vp(static_cast<std::size_t>(b * heads * lk * head_dim));
  const T *qd = q.data_ptr<T>(), *kd = k.data_ptr<T>(), *vd = v.data_ptr<T>();
  T* od = out.data_ptr<T>();
  at::parallel_for(0, b * heads, 1, [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t bh = first; bh < last; ++bh) {
      const auto bi = bh / heads, h = bh % heads;
      const auto off = bi * lk * kv_stride + h * head_dim;
      pack_head(kd + off, vd + off, kv_stride, lk, panels, kt.data() + bh * panels * head_dim * panel,
                vp.data() + bh * lk * head_dim);
    }
  });
  const std::int64_t blocks = (lq + block_rows - 1) / block_rows;
#if DIFFUSE_ROW_BLOCK_AVX512
  const bool avx512 = use_avx512f();
#endif
  at::parallel_for(0, b * heads * blocks, 1, [&](std::int64_t first, std::int64_t last) {
    std::vector<float> s(static_cast<std::size_t>(block_rows * panels * panel));
    for (std::int64_t item = first; item < last; ++item) {
      const auto bh = item / blocks, i0 = (item % blocks) * block_rows;
      const auto bi = bh / heads, h = bh % heads;
      const int n = static_cast<int>(std::min<std::int64_t>(block_rows, lq - i0));
      const auto row0 = (bi * lq + i0) * q_stride + h * head_dim;
#if DIFFUSE_ROW_BLOCK_AVX512
      if (avx512) {
        block_avx512(qd + row0, q_stride, n, kt.data() + bh * panels * head_dim * panel, vp.data() + bh * lk * head_dim,
                     lk, panels, scale, s.data(), od + row0, q_stride);
        continue;
      }
#endif
      DIFFUSE_CPU_DISPATCH(block(qd + row0, q_stride, n, kt.data() + bh * panels * head_dim * panel,
                                 vp.data() + bh * lk * head_dim, lk, panels, scale, s.data(), od + row0, q_stride));
    }
  });
}

}  // namespace row_block_detail

// True where row_block_attention applies: CPU float32 or bfloat16, heads of 64.
inline bool row_block_attention_applies(const torch::Tensor& q, std::int64_t heads) {
  return q.is_cpu() && q.dim() == 3 && q.size(2) == heads * row_block_detail::head_dim &&
         (q.scalar_type() == torch::kFloat32 || q.scalar_type() == torch::kBFloat16);
}

// q, k, v: (B, L, heads * 64) -> (B, Lq, heads * 64) = softmax(q k^T / 8) v per head; no autograd.
inline torch::Tensor row_block_attention(const torch::Tensor& q_in, const torch::Tensor& k_in, const torch::Tensor& v_in,
                                         std::int64_t heads) {
  const auto q = q_in.contiguous(), k = k_in.to(q.scalar_type()).contiguous(), v = v_in.to(q.scalar_type()).contiguous();
  auto out = torch::empty_like(q);
  if (q.size(1) == 0) return out;
  if (q.scalar_type() == torch::kFloat32) row_block_detail::run<float>(q, k, v, out, heads);
#if DIFFUSE_ROW_BLOCK_AVX512
  else if (use_avx512_bf16()) row_block_detail::run_dot_bf16(q, k, v, out, heads);
#endif
  else row_block_detail::run<c10::BFloat16>(q, k, v, out, heads);
  return out;
}

}  // namespace diffuse::nn
