#pragma once
// Inference attention on the CPU for heads of 64 (every SD3 model and text encoder), computed a
// block of 8 query rows at a time: the block's scores (8 x Lk floats) stay in L1/L2, are
// softmaxed in place and multiplied by V before the next block, and each block writes straight
// into the (B, L, heads * 64) output. Why: LibTorch 1.13's bmm runs the 24 per-head products of an
// SD3 layer one after another, each too small to keep both cores busy, and the scores make a round
// trip through memory: ~100 GFLOP/s in f32 and bf16, against ~190 here for SD3's 410 and 1178
// tokens (docs/performance.md; ~300 for a large f32 GEMM). Blocks of (head, query rows) are
// independent, so at::parallel_for hands whole blocks to each thread (which needs the including code
// built with OpenMP: CMakeLists.txt). Products accumulate in float32 (bfloat16 inputs are widened
// once, when K and V are packed), so bf16 results are closer to exact than bf16 bmm's.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <torch/types.h>

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
DIFFUSE_CPU_CLONES void block(const T* q, std::int64_t q_stride, int n, const float* kt, const float* vp,
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
#else
#define DIFFUSE_ROW_BLOCK_AVX512 0
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
  const bool avx512 = __builtin_cpu_supports("avx512f");
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
      block(qd + row0, q_stride, n, kt.data() + bh * panels * head_dim * panel, vp.data() + bh * lk * head_dim, lk,
            panels, scale, s.data(), od + row0, q_stride);
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
  else row_block_detail::run<c10::BFloat16>(q, k, v, out, heads);
  return out;
}

}  // namespace diffuse::nn
