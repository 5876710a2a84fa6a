#pragma once
// y = x W^T + b on the CPU in float32 for inference, with W read where it lies.
//
// Why: at batch 1 an SD3 layer multiplies 154 or 256 token rows by a weight of 9-36 MB that is
// used once per forward. A BLAS packs W into its own panel layout on every call; with so few rows
// that copy is a pass over memory that does not overlap the arithmetic: OpenBLAS 0.3.21 spent 17%
// of the SD3-medium forward at 256² packing and ~9% with its threads yielding, against 62% in its
// multiply kernel (perf, docs/performance.md). Here the small operand is packed instead (x^T in
// panels of 32 tokens) and each multiply-add takes its weight value straight from W's rows as a
// broadcast, so W streams from memory once, in order, under the arithmetic, with the next slice
// prefetched into L2 while the current one is used.
//
// That is the kernel for weights as checkpoints store them (row-major, (N, K) contiguous). A weight
// laid out column-major (nn/linear_weight_layout.hpp) takes a second kernel, further down, that
// needs no packing and no transposes at all.
//
// Blocking: 256 token rows (8 panels) whose x^T slice of kc = 1024 columns (1 MiB) stays in L2;
// 12 weight rows whose kc-slice (48 KiB) the 8 panels reuse; per (12 rows, panel) a 12 x 32 block
// of outputs summed in 24 AVX-512 registers over the slice, in order of k. Partial sums of a group
// of 192 weight rows go to a per-thread tile (L2); the last slice adds the bias and writes y,
// transposed 16 x 16 in registers. Threads take contiguous ranges of weight rows (at::parallel_for,
// OpenMP: see CMakeLists.txt). Fewer than 8 token rows (adaLN modulation, embedders) take a plain
// pass over W instead, and 512 or more rows are left to the BLAS, whose packing they pay back.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <torch/types.h>

#include "diffuse/core/cpu_features.hpp"
#include "diffuse/nn/linear_weight_layout.hpp"

namespace diffuse::nn {

namespace cpu_linear_detail {

constexpr std::int64_t panel = 32;      // token rows a panel (two 16-lane vectors)
constexpr std::int64_t block_rows = 12;  // weight rows a register block (24 accumulators)
constexpr std::int64_t mb = 256;         // token rows a cache block
constexpr std::int64_t kc = 1024;        // columns of x and W a cache block
constexpr std::int64_t group_rows = 16 * block_rows;  // weight rows whose partial sums stay in L2
constexpr std::int64_t few = 8;          // fewer token rows than this: one pass over W per 4 rows
// From this many token rows on, a BLAS's packing of W is paid back by the rows (OpenBLAS 0.3.21 on
// 1024-1178 rows: 1.2-1.3x this kernel, which re-reads W for every 256 rows; docs/performance.md).
constexpr std::int64_t many = 512;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DIFFUSE_CPU_LINEAR 1

// Where the next weight slice lies, so that a block can fetch part of it into L2 while it computes
// (rows first .. last of it, n columns from w, stride ldw). Without it the first panel of each
// block waits on memory for its 12 weight rows (154 token rows: 0.74x OpenBLAS without; 1.0-1.1x
// with it and the row groups, on a noisy host).
struct Prefetch {
  const float* w = nullptr;
  std::int64_t ldw = 0, n = 0;
  int first = 0, last = 0;
};

// One cache line of each of the prefetch share's rows, from column k0.
inline void prefetch_columns(const Prefetch& pf, std::int64_t k0) {
  if (k0 >= pf.n) return;
  for (int q = pf.first; q < pf.last; ++q)
    _mm_prefetch(reinterpret_cast<const char*>(pf.w + q * pf.ldw + k0), _MM_HINT_T1);
}

// The block for the last R < 12 rows of a thread's range, reading a copy of their slice (stride kc).
// tile[r][0..32) (stride ld) = (first ? 0 : tile[r][0..32)) + sum_k w[r][k] * xt[k][0..32), k in
// [0, n), summed in order of k. The slice's sum is added to the tile at the end rather than
// continued from it, so a row of K is summed in K / kc pieces (error grows with kc, not K).
template <int R>
__attribute__((target("avx512f"))) void block(const float* w, const float* xt, std::int64_t n, float* tile,
                                              std::int64_t ld, bool first, const Prefetch& pf) {
  constexpr std::int64_t ldw = kc;  // a copied slice: the row offsets are constants in the instructions
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (std::int64_t k0 = 0; k0 < n; k0 += 16) {
    prefetch_columns(pf, k0);
    const std::int64_t k1 = std::min(n, k0 + 16);
    for (std::int64_t k = k0; k < k1; ++k) {
      const __m512 x0 = _mm512_loadu_ps(xt + k * panel), x1 = _mm512_loadu_ps(xt + k * panel + 16);
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) {
        const __m512 wv = _mm512_set1_ps(w[r * ldw + k]);
        acc[r][0] = _mm512_fmadd_ps(wv, x0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(wv, x1, acc[r][1]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float* t = tile + r * ld;
    _mm512_storeu_ps(t, first ? acc[r][0] : _mm512_add_ps(_mm512_loadu_ps(t), acc[r][0]));
    _mm512_storeu_ps(t + 16, first ? acc[r][1] : _mm512_add_ps(_mm512_loadu_ps(t + 16), acc[r][1]));
  }
}

__attribute__((target("avx512f"))) inline __m512 broadcast_at(const char* b, std::int64_t offset) {
  return _mm512_set1_ps(*reinterpret_cast<const float*>(b + offset));
}

// The 12-row block reading the weight in place (rows ldw floats apart): twelve row pointers do
// not fit in the general registers beside the loop's own, so the rows are addressed as four bases
// plus the row stride scaled by 1, 2, 4 or 8 (rows 0 1 2 4 8 from b0, 9 from b1, 3 5 7 11 from b3,
// 6 10 from b6). The empty asm keeps GCC from turning each row back into a pointer of its own.

__attribute__((target("avx512f"))) inline void block12(const float* w, std::int64_t ldw, const float* xt,
                                                        std::int64_t n, float* tile, std::int64_t ld, bool first,
                                                        const Prefetch& pf) {
  __m512 acc[12][2];
  for (int r = 0; r < 12; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  std::int64_t s = ldw * static_cast<std::int64_t>(sizeof(float));
  const char* b0 = reinterpret_cast<const char*>(w);
  const char *b1 = b0 + s, *b3 = b0 + 3 * s, *b6 = b0 + 6 * s;
  for (std::int64_t k0 = 0; k0 < n; k0 += 16) {
    prefetch_columns(pf, k0);
    const std::int64_t k1 = std::min(n, k0 + 16);
    for (std::int64_t k = k0; k < k1; ++k) {
      asm("" : "+r"(s));
      const __m512 x0 = _mm512_loadu_ps(xt + k * panel), x1 = _mm512_loadu_ps(xt + k * panel + 16);
      // one broadcast, two multiply-adds, row by row: all twelve broadcasts alive at once would
      // not fit in the 32 vector registers beside the 24 sums
#define DIFFUSE_CPU_LINEAR_ROW(r, b, offset)       \
  do {                                             \
    const __m512 v = broadcast_at(b, offset);      \
    acc[r][0] = _mm512_fmadd_ps(v, x0, acc[r][0]); \
    acc[r][1] = _mm512_fmadd_ps(v, x1, acc[r][1]); \
  } while (0)
      DIFFUSE_CPU_LINEAR_ROW(0, b0, 0);
      DIFFUSE_CPU_LINEAR_ROW(1, b0, s);
      DIFFUSE_CPU_LINEAR_ROW(2, b0, 2 * s);
      DIFFUSE_CPU_LINEAR_ROW(3, b3, 0);
      DIFFUSE_CPU_LINEAR_ROW(4, b0, 4 * s);
      DIFFUSE_CPU_LINEAR_ROW(5, b3, 2 * s);
      DIFFUSE_CPU_LINEAR_ROW(6, b6, 0);
      DIFFUSE_CPU_LINEAR_ROW(7, b3, 4 * s);
      DIFFUSE_CPU_LINEAR_ROW(8, b0, 8 * s);
      DIFFUSE_CPU_LINEAR_ROW(9, b1, 8 * s);
      DIFFUSE_CPU_LINEAR_ROW(10, b6, 4 * s);
      DIFFUSE_CPU_LINEAR_ROW(11, b3, 8 * s);
#undef DIFFUSE_CPU_LINEAR_ROW
      b0 += sizeof(float), b1 += sizeof(float), b3 += sizeof(float), b6 += sizeof(float);
    }
  }
  for (int r = 0; r < 12; ++r) {
    float* t = tile + r * ld;
    _mm512_storeu_ps(t, first ? acc[r][0] : _mm512_add_ps(_mm512_loadu_ps(t), acc[r][0]));
    _mm512_storeu_ps(t + 16, first ? acc[r][1] : _mm512_add_ps(_mm512_loadu_ps(t + 16), acc[r][1]));
  }
}

using block_fn = void (*)(const float*, const float*, std::int64_t, float*, std::int64_t, bool, const Prefetch&);
template <std::size_t... R>
constexpr auto make_blocks(std::index_sequence<R...>) {
  return std::array<block_fn, sizeof...(R)>{&block<static_cast<int>(R) + 1>...};
}
inline constexpr auto blocks = make_blocks(std::make_index_sequence<block_rows>{});

// r[i] <- column i of the 16 x 16 matrix whose rows are r[0..16) (unpack within 128-bit lanes,
// then exchange 128-bit lanes twice).
__attribute__((target("avx512f"))) inline void transpose16(__m512* r) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 4; ++j) {
      t[8 * h + j] = _mm512_shuffle_f32x4(r[8 * h + j], r[8 * h + j + 4], 0x88);
      t[8 * h + j + 4] = _mm512_shuffle_f32x4(r[8 * h + j], r[8 * h + j + 4], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
}

inline __mmask16 first_lanes(std::int64_t n) {
  return static_cast<__mmask16>(n >= 16 ? 0xffff : (1u << n) - 1u);
}

// Panel p of xt: xt[p][j][c] = x[32 p + c][j], zero past M; 16 x 16 tiles transposed in registers.
__attribute__((target("avx512f"))) inline void pack_panel(const float* x, std::int64_t m, std::int64_t k,
                                                           std::int64_t p, float* xt) {
  float* dst = xt + p * k * panel;
  for (std::int64_t c0 = 0; c0 < panel; c0 += 16) {
    const std::int64_t rows = std::clamp<std::int64_t>(m - p * panel - c0, 0, 16);
    const float* src = x + (p * panel + c0) * k;
    for (std::int64_t j0 = 0; j0 < k; j0 += 16) {
      const std::int64_t cols = std::min<std::int64_t>(16, k - j0);
      const __mmask16 mask = first_lanes(cols);
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(mask, src + i * k + j0) : _mm512_setzero_ps();
      transpose16(r);
      for (int i = 0; i < cols; ++i) _mm512_storeu_ps(dst + (j0 + i) * panel + c0, r[i]);
    }
  }
}

// x (M, K) rows -> xt panels of 32 token rows: xt[p][j][c] = x[32 p + c][j], zero past M.
inline void pack_panels(const float* x, std::int64_t m, std::int64_t k, float* xt) {
  at::parallel_for(0, (m + panel - 1) / panel, 1, [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t p = first; p < last; ++p) pack_panel(x, m, k, p, xt);
  });
}

// y[m0 + t][r0 + q] = tile[q][t] + bias[r0 + q] for t < rows, q < r (<= 16): the tile's token
// columns transposed 16 at a time.
__attribute__((target("avx512f"))) inline void store_transposed(const float* tile, std::int64_t ld, int r,
                                                                 std::int64_t rows, const float* bias, float* y,
                                                                 std::int64_t ldy) {
  const __mmask16 mask = first_lanes(r);
  const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias) : _mm512_setzero_ps();
  for (std::int64_t t0 = 0; t0 < rows; t0 += 16) {
    __m512 v[16];
    for (int q = 0; q < 16; ++q) v[q] = q < r ? _mm512_loadu_ps(tile + q * ld + t0) : _mm512_setzero_ps();
    transpose16(v);
    const std::int64_t n = std::min<std::int64_t>(16, rows - t0);
    for (int i = 0; i < n; ++i) _mm512_mask_storeu_ps(y + (t0 + i) * ldy, mask, _mm512_add_ps(v[i], b));
  }
}

// Sixteen weight values from w as float32: bfloat16 is the upper half of a float32.
__attribute__((target("avx512f"))) inline __m512 load_weights(const float* w, __mmask16 mask) {
  return _mm512_maskz_loadu_ps(mask, w);
}
__attribute__((target("avx512f"))) inline __m512 load_weights(const c10::BFloat16* w, __mmask16 mask) {
  __m256i h;
  if (mask == 0xffff) {
    h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  } else {  // the row's last < 16 values (a masked 16-bit load would need AVX512-BW)
    alignas(32) std::uint16_t tail[16] = {};
    for (int i = 0; i < 16 && (mask >> i) & 1; ++i) std::memcpy(tail + i, w + i, sizeof(std::uint16_t));
    h = _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
  }
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// y[i][n] = x[i] . w[n] + bias[n] for the (few) rows i of x, weight rows [n0, n1): each weight row
// is read once, in order, against up to 4 rows of x at a time. What a one-row product (adaLN
// modulation, embedders) is: a pass over the weight at memory speed. W is float32 or bfloat16
// (x, bias and y float32; the sums are float32 either way).
template <class TW>
__attribute__((target("avx512f"))) void few_rows(const float* x, const TW* w, const float* bias, float* y, std::int64_t m,
                                                 std::int64_t k, std::int64_t n, std::int64_t n0, std::int64_t n1) {
  for (std::int64_t i0 = 0; i0 < m; i0 += 4) {
    const int rows = static_cast<int>(std::min<std::int64_t>(4, m - i0));
    for (std::int64_t j = n0; j < n1; ++j) {
      const TW* wr = w + j * k;
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (std::int64_t c = 0; c < k; c += 16) {
        const __mmask16 mask = first_lanes(k - c);
        const __m512 wv = load_weights(wr + c, mask);
        for (int i = 0; i < rows; ++i)
          acc[i] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mask, x + (i0 + i) * k + c), acc[i]);
      }
      for (int i = 0; i < rows; ++i) y[(i0 + i) * n + j] = _mm512_reduce_add_ps(acc[i]) + (bias ? bias[j] : 0.0f);
    }
  }
}

template <class TW>
void run_few_rows(const float* x, const TW* w, const float* bias, float* y, std::int64_t m, std::int64_t k,
                  std::int64_t n) {
  at::parallel_for(0, n, 64, [&](std::int64_t n0, std::int64_t n1) { few_rows(x, w, bias, y, m, k, n, n0, n1); });
}

// One step of a thread's schedule: weight rows r0 .. r0 + 12 against columns k0 .. k0 + kc of the
// token rows m0 .. m0 + mb.
struct Step {
  std::int64_t m0, k0, r0;
};

// The order in which a thread visits its weight rows [n0, n1): token blocks, then groups of
// group_rows weight rows (their partial sums, group_rows x mb floats, stay in L2), then column
// slices, then row blocks. Each weight element is read from memory once per token block.
inline std::vector<Step> schedule(std::int64_t m, std::int64_t k, std::int64_t n0, std::int64_t n1) {
  std::vector<Step> steps;
  for (std::int64_t m0 = 0; m0 < m; m0 += mb)
    for (std::int64_t g0 = n0; g0 < n1; g0 += group_rows)
      for (std::int64_t k0 = 0; k0 < k; k0 += kc)
        for (std::int64_t r0 = g0; r0 < std::min(n1, g0 + group_rows); r0 += block_rows) steps.push_back({m0, k0, r0});
  return steps;
}

// y (M, N) = x (M, K) w (N, K)^T + bias (N or null); all contiguous float32.
inline void run(const float* x, const float* w, const float* bias, float* y, std::int64_t m, std::int64_t k,
                std::int64_t n) {
  if (m < few) return run_few_rows(x, w, bias, y, m, k, n);
  const std::int64_t panels = (m + panel - 1) / panel;
  const std::unique_ptr<float[]> xt(new float[static_cast<std::size_t>(panels * panel * k)]);
  pack_panels(x, m, k, xt.get());
  const std::int64_t row_blocks = (n + block_rows - 1) / block_rows;
  at::parallel_for(0, row_blocks, 1, [&](std::int64_t first, std::int64_t last) {
    const std::int64_t n0 = first * block_rows, n1 = std::min(n, last * block_rows);
    const auto steps = schedule(m, k, n0, n1);
    // partial sums of one group of weight rows for one token block: tile[row - g0][token - m0]
    const std::unique_ptr<float[]> tile(new float[static_cast<std::size_t>(group_rows * mb)]);
    // a step's weight slice when it has fewer than 12 rows (the end of the thread's range), copied
    // so that block<R> reads it at fixed offsets; full steps read W in place (block12)
    const std::unique_ptr<float[]> slice(new float[static_cast<std::size_t>(block_rows * kc)]);
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const auto [m0, k0, r0] = steps[i];
      const std::int64_t g0 = n0 + (r0 - n0) / group_rows * group_rows;
      const std::int64_t p0 = m0 / panel, p1 = std::min(panels, (m0 + mb) / panel), np = p1 - p0;
      const std::int64_t kn = std::min(kc, k - k0);
      const int r = static_cast<int>(std::min(block_rows, n1 - r0));
      float* tile_rows = tile.get() + (r0 - g0) * mb;
      if (r < block_rows)
        for (int q = 0; q < r; ++q) std::copy_n(w + (r0 + q) * k + k0, kn, slice.get() + q * kc);
      const Step* next = i + 1 < steps.size() ? &steps[i + 1] : nullptr;
      const int next_rows = next ? static_cast<int>(std::min(block_rows, n1 - next->r0)) : 0;
      for (std::int64_t p = p0; p < p1; ++p) {
        Prefetch pf;
        if (next) {
          // the next step's weight rows, a share of them during each panel
          const auto j = p - p0;
          pf = {w + next->r0 * k + next->k0, k, std::min(kc, k - next->k0), static_cast<int>(j * next_rows / np),
                static_cast<int>((j + 1) * next_rows / np)};
        }
        if (r == block_rows)
          block12(w + r0 * k + k0, k, xt.get() + p * k * panel + k0 * panel, kn, tile_rows + (p - p0) * panel, mb,
                  k0 == 0, pf);
        else
          blocks[r - 1](slice.get(), xt.get() + p * k * panel + k0 * panel, kn, tile_rows + (p - p0) * panel, mb,
                      k0 == 0, pf);
      }
      if (k0 + kn < k) continue;
      store_transposed(tile_rows, mb, r, std::min(mb, m - m0), bias ? bias + r0 : nullptr, y + m0 * n + r0, n);
    }
  });
}

// ---- Weights stored column-major (W^T contiguous; nn/linear_weight_layout.hpp lays them out) ----
//
// With W^T in memory, sixteen consecutive output features of one input column are one vector load,
// so the roles turn around: the token values are the broadcast operands, read from x where it lies,
// and the weight's vectors are loaded in place; the output block is rows of y, stored without the
// 16 x 16 transposes above, and nothing is packed at all. Measured against the row-major kernel on
// the SD3-medium token products (cold weights, same process): 1.08-1.14x over all shapes, 1.5x on
// the one-row adaLN products, which then run at the memory's speed (docs/performance.md).
//
// Blocking: a register block is 6 token rows x 64 features (24 accumulators; per column of W^T 4
// vector loads and 6 broadcasts for 24 multiply-adds); a 128-row slice of a 64-feature panel of
// W^T (32 KiB) stays in L1 while every 6-row block of up to 256 tokens uses it, and the next slice
// is prefetched into L2, a share of its rows by each block. Each slice's sums are added to y (the
// first adds the bias), so a row of K is summed in pieces of 128. Threads take groups of up to 4
// panels.
constexpr std::int64_t cm_rows = 6;     // token rows a register block
constexpr std::int64_t cm_cols = 64;    // features a register block (4 vectors); N must be a multiple
constexpr std::int64_t cm_kc = 128;     // columns of x (rows of W^T) a slice
constexpr std::int64_t cm_group = 4;    // panels of 64 features a thread's cache block, at most
constexpr std::int64_t cm_mb = 256;     // token rows a cache block

// Rows of the next W^T slice for a block to fetch into L2 while it computes: 64 floats (4 cache
// lines) from `first`, `rows` of them, ld floats apart.
struct SlicePrefetch {
  const float* first = nullptr;
  std::int64_t ld = 0, rows = 0;
};

// y[i][0..64) (stride ldy) = (first ? bias[0..64) or 0 : y[i][0..64)) + sum_k x[i][k] wt[k][0..64),
// i < R, k in [0, n), summed in order of k. The prefetches are spread over the k loop (row j at
// k = j n / rows): issued together at the start they filled the fill buffers and stalled the core
// (7% of the forward, perf).
template <int R>
__attribute__((target("avx512f"))) void column_major_block(const float* x, std::int64_t ldx, const float* wt,
                                                           std::int64_t ldw, std::int64_t n, float* y,
                                                           std::int64_t ldy, const float* bias, bool first,
                                                           const SlicePrefetch& pf) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  std::int64_t next = 0;  // the next prefetch row
  for (std::int64_t k0 = 0; k0 < n; k0 += 16) {
    const std::int64_t k1 = std::min(n, k0 + 16);
    for (; next < pf.rows && next * n < k1 * pf.rows; ++next) {
      const char* line = reinterpret_cast<const char*>(pf.first + next * pf.ld);
      for (int l = 0; l < 4; ++l) _mm_prefetch(line + 64 * l, _MM_HINT_T1);
    }
    for (std::int64_t k = k0; k < k1; ++k) {
      const float* w = wt + k * ldw;
      const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16), w2 = _mm512_loadu_ps(w + 32),
                   w3 = _mm512_loadu_ps(w + 48);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        const __m512 v = _mm512_set1_ps(x[r * ldx + k]);
        acc[r][0] = _mm512_fmadd_ps(v, w0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(v, w1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(v, w2, acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(v, w3, acc[r][3]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) {
      float* out = y + r * ldy + 16 * j;
      const __m512 base =
          first ? (bias ? _mm512_loadu_ps(bias + 16 * j) : _mm512_setzero_ps()) : _mm512_loadu_ps(out);
      _mm512_storeu_ps(out, _mm512_add_ps(base, acc[r][j]));
    }
}

using column_major_block_fn = void (*)(const float*, std::int64_t, const float*, std::int64_t, std::int64_t, float*,
                                       std::int64_t, const float*, bool, const SlicePrefetch&);
template <std::size_t... R>
constexpr auto make_column_major_blocks(std::index_sequence<R...>) {
  return std::array<column_major_block_fn, sizeof...(R)>{&column_major_block<static_cast<int>(R) + 1>...};
}
inline constexpr auto column_major_blocks = make_column_major_blocks(std::make_index_sequence<cm_rows>{});

// y (M, N) = x (M, K) wt (K, N) + bias (N or null); all contiguous float32, N a multiple of 64.
inline void run_column_major(const float* x, const float* wt, const float* bias, float* y, std::int64_t m,
                             std::int64_t k, std::int64_t n) {
  const std::int64_t panels = n / cm_cols;
  // groups of up to cm_group panels, at least two per thread where N allows (N = 1536 on 16 threads)
  const std::int64_t per_group =
      std::clamp<std::int64_t>(panels / (2 * std::max(1, at::get_num_threads())), 1, cm_group);
  const std::int64_t groups = (panels + per_group - 1) / per_group;
  at::parallel_for(0, groups, 1, [&](std::int64_t g0, std::int64_t g1) {
    for (std::int64_t g = g0; g < g1; ++g) {
      const std::int64_t c_first = g * per_group * cm_cols, c_last = std::min(n, c_first + per_group * cm_cols);
      for (std::int64_t m0 = 0; m0 < m; m0 += cm_mb) {
        const std::int64_t rows = std::min(cm_mb, m - m0), blocks = (rows + cm_rows - 1) / cm_rows;
        for (std::int64_t k0 = 0; k0 < k; k0 += cm_kc) {
          const std::int64_t kn = std::min(cm_kc, k - k0);
          for (std::int64_t c0 = c_first; c0 < c_last; c0 += cm_cols) {
            // the slice after this one: the group's next panel, else its first panel one slice on
            std::int64_t next_c = c0 + cm_cols, next_k = k0;
            if (next_c >= c_last) next_c = c_first, next_k = k0 + cm_kc;
            const std::int64_t next_rows = next_k < k ? std::min(cm_kc, k - next_k) : 0;
            for (std::int64_t b = 0; b < blocks; ++b) {
              // this block's share of the next slice's rows
              const std::int64_t q0 = next_rows * b / blocks, q1 = next_rows * (b + 1) / blocks;
              const SlicePrefetch pf{wt + (next_k + q0) * n + next_c, n, q1 - q0};
              const std::int64_t i0 = m0 + b * cm_rows;
              const int r = static_cast<int>(std::min(cm_rows, m - i0));
              column_major_blocks[r - 1](x + i0 * k + k0, k, wt + k0 * n + c0, n, kn, y + i0 * n + c0, n,
                                         bias ? bias + c0 : nullptr, k0 == 0, pf);
            }
          }
        }
      }
    }
  });
}

#else
#define DIFFUSE_CPU_LINEAR 0
#endif

}  // namespace cpu_linear_detail

// Which of the kernels computes x2d (M, K) @ weight (N, K)^T + bias on this CPU, if any: an x86-64
// CPU with AVX-512, tensors on the CPU, no autograd wanted, and
//  - float32, fewer than 512 token rows: a weight stored column-major (strides (1, N)) with N a
//    multiple of 64 takes the column-major kernel, a contiguous one the row-major kernel (fewer than
//    8 token rows: a pass over the weight per 4 rows);
//  - bfloat16, fewer than 8 token rows, a contiguous weight: the same pass over the weight, read as
//    bfloat16 (LibTorch 1.13's oneDNN product read a one-row bf16 adaLN weight at 20.7 GB/s, this
//    pass at 28.2: docs/performance.md).
// Anything else is left to at::linear.
enum class CpuLinearKernel { None, RowMajorWeight, ColumnMajorWeight, BFloat16FewRows };

inline CpuLinearKernel cpu_linear_kernel(const torch::Tensor& x2d, const torch::Tensor& weight,
                                         const torch::Tensor& bias = {}) {
#if DIFFUSE_CPU_LINEAR
  const bool grad = at::GradMode::is_enabled() &&
                    (x2d.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  const bool runs = x2d.dim() == 2 && weight.dim() == 2 && x2d.size(1) == weight.size(1) && x2d.is_cpu() &&
                    weight.is_cpu() && (!bias.defined() || (bias.is_cpu() && bias.numel() == weight.size(0))) &&
                    !grad && use_avx512f();
  if (!runs) return CpuLinearKernel::None;
  const auto all = [&](torch::ScalarType t) {
    return x2d.scalar_type() == t && weight.scalar_type() == t && (!bias.defined() || bias.scalar_type() == t);
  };
  if (all(torch::kBFloat16))
    return x2d.size(0) < cpu_linear_detail::few && weight.is_contiguous() ? CpuLinearKernel::BFloat16FewRows
                                                                          : CpuLinearKernel::None;
  if (!all(torch::kFloat32) || x2d.size(0) >= cpu_linear_detail::many) return CpuLinearKernel::None;
  // (a weight of K <= 1 columns is both row- and column-major: the row-major kernel takes it)
  if (weight.size(0) % cpu_linear_detail::cm_cols == 0 && weight.size(1) > 1 && is_column_major(weight))
    return CpuLinearKernel::ColumnMajorWeight;
  if (weight.is_contiguous()) return CpuLinearKernel::RowMajorWeight;
#else
  (void)x2d, (void)weight, (void)bias;
#endif
  return CpuLinearKernel::None;
}

inline bool cpu_linear_applies(const torch::Tensor& x2d, const torch::Tensor& weight, const torch::Tensor& bias = {}) {
  return cpu_linear_kernel(x2d, weight, bias) != CpuLinearKernel::None;
}

// x (M, K) @ weight (N, K)^T + bias (N), no autograd. Where no kernel runs (no AVX-512, another dtype
// or device, 512 or more float32 rows, another weight layout) it is at::linear, so a caller need not
// ask cpu_linear_applies first.
inline torch::Tensor cpu_linear(const torch::Tensor& x2d, const torch::Tensor& weight, const torch::Tensor& bias) {
#if DIFFUSE_CPU_LINEAR
  const auto kernel = cpu_linear_kernel(x2d, weight, bias);
  if (kernel == CpuLinearKernel::None) return at::linear(x2d, weight, bias);
  const auto m = x2d.size(0), k = x2d.size(1), n = weight.size(0);
  if (m == 0 || n == 0 || k == 0) return at::linear(x2d, weight, bias);  // nothing to multiply
  // the bf16 path sums in float32 from float32 copies of the (few) rows and the bias
  const auto dtype = kernel == CpuLinearKernel::BFloat16FewRows ? torch::kFloat32 : x2d.scalar_type();
  const auto x = x2d.to(dtype).contiguous();
  const auto b = bias.defined() ? bias.to(dtype).contiguous() : bias;
  auto y = torch::empty({m, n}, x.options());
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  switch (kernel) {
    case CpuLinearKernel::ColumnMajorWeight:
      cpu_linear_detail::run_column_major(x.data_ptr<float>(), weight.data_ptr<float>(), bp, y.data_ptr<float>(), m, k, n);
      return y;
    case CpuLinearKernel::BFloat16FewRows:
      cpu_linear_detail::run_few_rows(x.data_ptr<float>(), weight.data_ptr<c10::BFloat16>(), bp, y.data_ptr<float>(), m, k, n);
      return y.to(torch::kBFloat16);
    default:
      cpu_linear_detail::run(x.data_ptr<float>(), weight.data_ptr<float>(), bp, y.data_ptr<float>(), m, k, n);
      return y;
  }
#else
  return at::linear(x2d, weight, bias);
#endif
}

}  // namespace diffuse::nn
