#pragma once
// The one attention entry point (STYLE.md): softmax(q k^T / sqrt(d)) v over heads. LibTorch 2.x
// dispatches to its fused scaled_dot_product_attention (flash / memory-efficient on CUDA, fused
// CPU kernels). LibTorch 1.13 has only a math path (at::_scaled_dot_product_attention), which
// copies the transposed heads and scales q separately; here the heads are laid out once with the
// scale applied in the same pass, and the softmax runs in place: 2.4x faster at 410 tokens (35 ->
// 14 ms in f32, 13 -> 5 ms in bf16 for 24 heads of 64), bit-identical. For long f32 sequences the
// scores are computed per head in blocks of 256 queries, which stay in L2 (1178 tokens: 151 -> 110 ms).
// Inference with heads of 64 (all SD3 models) goes to row_block_attention.hpp instead: 2x this
// path in f32 and bf16 at 410 and 1178 tokens (docs/performance.md). The bmm path stays for other
// head widths. Training runs the same forward inside an autograd Function whose backward recomputes
// the scores (attention_detail::RecomputedScoresAttention), so the activations stay linear in length.
#include <algorithm>
#include <cmath>

#include <ATen/core/grad_mode.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include "diffuse/core/torch_compat.hpp"
#include "diffuse/nn/row_block_attention.hpp"

namespace diffuse::nn {

#if !DIFFUSE_TORCH_2
inline torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               std::int64_t heads);

namespace attention_detail {

// (B, L, heads * d) <-> (B * heads, L, d)
inline torch::Tensor to_heads(const torch::Tensor& x, std::int64_t heads) {
  const auto b = x.size(0), l = x.size(1), d = x.size(2) / heads;
  return x.view({b, l, heads, d}).permute({0, 2, 1, 3}).reshape({b * heads, l, d});
}
inline torch::Tensor from_heads(const torch::Tensor& x, std::int64_t b) {
  const auto heads = x.size(0) / b, l = x.size(1), d = x.size(2);
  return x.view({b, heads, l, d}).permute({0, 2, 1, 3}).reshape({b, l, heads * d});
}

// Attention with autograd that keeps only q, k and v for the backward (3 x L x D values) and
// recomputes the probabilities there, as FlashAttention does (Dao et al. 2022, sec. 3.1): autograd
// through bmm-softmax-bmm keeps heads x Lq x Lk probabilities plus head-laid-out copies of q, k, v,
// ~3x the activations of a whole SD3 block at 410 tokens and quadratic in the length. The extra
// cost is one q k^T product and a softmax (~5% of a block's multiply-adds at 410 tokens). The
// forward takes the no-grad path (row-block kernel for heads of 64). Queries are processed in
// chunks so the probabilities held at once stay below ~16 M values whatever the length.
struct RecomputedScoresAttention : torch::autograd::Function<RecomputedScoresAttention> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q,
                                                const torch::Tensor& k, const torch::Tensor& v, std::int64_t heads) {
    ctx->save_for_backward({q, k, v});
    ctx->saved_data["heads"] = heads;
    return {attention(q, k, v, heads)};  // autograd is off inside a Function's forward
  }

  // S = (s q) k^T, P = softmax(S), O = P v:  dV = P^T dO, dP = dO v^T, dS = P (dP - rowsum(dP P)),
  // dq = s dS k, dk = dS^T (s q).
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto heads = ctx->saved_data["heads"].toInt();
    const auto b = saved[0].size(0), lq = saved[0].size(1), lk = saved[1].size(1), d = saved[0].size(2) / heads;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    const auto qh = to_heads(saved[0] * scale, heads), kh = to_heads(saved[1], heads), vh = to_heads(saved[2], heads);
    const auto kt = kh.transpose(1, 2), vt = vh.transpose(1, 2);
    const auto go = to_heads(grads[0].to(saved[0].scalar_type()), heads);
    const auto bh = qh.size(0);
    const std::int64_t chunk = std::max<std::int64_t>(1, std::min<std::int64_t>(lq, (std::int64_t{1} << 24) / std::max<std::int64_t>(1, bh * lk)));
    auto dq = at::empty_like(qh);
    torch::Tensor dk, dv;
    for (std::int64_t i = 0; i < lq; i += chunk) {
      const auto n = std::min(chunk, lq - i);
      const auto qc = qh.narrow(1, i, n), goc = go.narrow(1, i, n);
      const auto p = at::_softmax(at::bmm(qc, kt), -1, false);
      const auto ds = at::_softmax_backward_data(at::bmm(goc, vt), p, -1, p.scalar_type());
      dq.narrow(1, i, n).copy_(at::bmm(ds, kh).mul_(scale));
      if (i == 0) {
        dk = at::bmm(ds.transpose(1, 2), qc);
        dv = at::bmm(p.transpose(1, 2), goc);
      } else {
        dk.baddbmm_(ds.transpose(1, 2), qc);
        dv.baddbmm_(p.transpose(1, 2), goc);
      }
    }
    return {from_heads(dq, b), from_heads(dk, b), from_heads(dv, b), torch::Tensor()};
  }
};

}  // namespace attention_detail
#endif

// q, k, v: (B, L, heads * head_dim) -> (B, Lq, heads * head_dim); no mask, no dropout.
inline torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               std::int64_t heads) {
  const auto b = q.size(0), lq = q.size(1), lk = k.size(1), d = q.size(2) / heads;
  auto split = [&](const torch::Tensor& x, std::int64_t l) { return x.view({b, l, heads, d}).transpose(1, 2); };
#if DIFFUSE_TORCH_2
  auto out = at::scaled_dot_product_attention(split(q, lq), split(k, lk), split(v, lk));
  return out.transpose(1, 2).reshape({b, lq, heads * d});  // (B, Lq, heads * d)
#else
  (void)split;
  const auto bh = b * heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  // The scale goes on q (Lq x d values, not Lq x Lk scores), in the pass that lays the heads out.
  // Not baddbmm(beta = 0): 1.13's small-matrix kernel computes beta * C, so an uninitialised C
  // turned the scores into NaN whenever the allocator handed back memory holding NaN.
  const auto q_heads = q.view({b, lq, heads, d}).permute({0, 2, 1, 3});
  const auto kt = k.view({b, lk, heads, d}).permute({0, 2, 3, 1}).reshape({bh, d, lk});  // k transposed
  const auto vh = v.view({b, lk, heads, d}).permute({0, 2, 1, 3}).reshape({bh, lk, d});
  torch::Tensor out;
  const bool grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (grad) {  // the scores are recomputed in the backward, not kept (attention_detail below)
    return attention_detail::RecomputedScoresAttention::apply(q, k, v, heads)[0];
  } else if (row_block_attention_applies(q, heads) && lk > 0) {
    return row_block_attention(q, k, v, heads);  // heads of 64: see row_block_attention.hpp
  } else {
    auto qh = at::empty({b, heads, lq, d}, q.options());
    at::mul_out(qh, q_heads, at::scalar_tensor(scale, q.options()));
    qh = qh.view({bh, lq, d});
    if (q.scalar_type() == torch::kFloat32 && lq * lk >= (1 << 20)) {
      constexpr std::int64_t block = 256;
      out = at::empty({bh, lq, d}, q.options());
      auto scores = at::empty({std::min(block, lq), lk}, q.options());
      for (std::int64_t h = 0; h < bh; ++h)
        for (std::int64_t i = 0; i < lq; i += block) {
          const auto n = std::min(block, lq - i);
          auto s = scores.narrow(0, 0, n);
          at::mm_out(s, qh[h].narrow(0, i, n), kt[h]);
          at::_softmax_out(s, s, -1, false);
          auto o = out[h].narrow(0, i, n);
          at::mm_out(o, s, vh[h]);
        }
    } else {
      auto scores = at::bmm(qh, kt);
      at::_softmax_out(scores, scores, -1, false);
      out = at::bmm(scores, vh);
    }
  }
  return out.view({b, heads, lq, d}).permute({0, 2, 1, 3}).reshape({b, lq, heads * d});  // (B, Lq, heads * d)
#endif
}

// The textbook formula, for tests of the entry point above.
inline torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         std::int64_t heads) {
  const auto b = q.size(0), lq = q.size(1), lk = k.size(1), d = q.size(2) / heads;
  const auto qh = q.view({b, lq, heads, d}).transpose(1, 2), kh = k.view({b, lk, heads, d}).transpose(1, 2),
             vh = v.view({b, lk, heads, d}).transpose(1, 2);
  const auto w = torch::softmax(torch::matmul(qh, kh.transpose(-2, -1)) / std::sqrt(static_cast<double>(d)), -1);
  return torch::matmul(w, vh).transpose(1, 2).reshape({b, lq, heads * d});
}

}  // namespace diffuse::nn
