#pragma once
// The one attention entry point (STYLE.md): softmax(q k^T / sqrt(d)) v over heads. LibTorch 2.x
// dispatches to its fused scaled_dot_product_attention (flash / memory-efficient on CUDA, fused
// CPU kernels); LibTorch 1.13 has only the private math path at::_scaled_dot_product_attention,
// which equals the textbook formula exactly (BUILD_NOTES section 3).
#include <torch/types.h>

#include "diffuse/core/torch_compat.hpp"

namespace diffuse::nn {

// q, k, v: (B, L, heads * head_dim) -> (B, Lq, heads * head_dim); no mask, no dropout.
inline torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               std::int64_t heads) {
  const auto b = q.size(0), lq = q.size(1), lk = k.size(1), d = q.size(2) / heads;
  auto split = [&](const torch::Tensor& x, std::int64_t l) { return x.view({b, l, heads, d}).transpose(1, 2); };
#if DIFFUSE_TORCH_2
  auto out = at::scaled_dot_product_attention(split(q, lq), split(k, lk), split(v, lk));
#else
  auto out = std::get<0>(at::_scaled_dot_product_attention(split(q, lq), split(k, lk), split(v, lk)));
#endif
  return out.transpose(1, 2).reshape({b, lq, heads * d});  // (B, Lq, heads * d)
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
