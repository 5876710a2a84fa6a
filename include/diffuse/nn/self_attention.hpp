#pragma once
// The per-stream attention projections of an MM-DiT block: qkv (one Linear whose rows are
// [q; k; v]), optional per-head RMSNorm of q and k (ln_q, ln_k), and the output projection proj.
// The attention itself runs jointly over both streams (backbone/mmdit.hpp).
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/nn/rms_norm.hpp"

namespace diffuse::nn {

struct QKV {
  torch::Tensor q, k, v;  // each (B, L, heads * head_dim)
};

class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(std::int64_t dim, std::int64_t heads, bool qk_norm, bool pre_only, bool qkv_bias = true)
      : heads_(heads), head_dim_(dim / heads) {
    qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(dim, 3 * dim).bias(qkv_bias)));
    if (!pre_only) proj = register_module("proj", torch::nn::Linear(dim, dim));
    if (qk_norm) {
      ln_q = register_module("ln_q", RMSNorm(head_dim_));
      ln_k = register_module("ln_k", RMSNorm(head_dim_));
    }
  }

  // x: (B, L, D) already normalised and modulated.
  QKV pre_attention(const torch::Tensor& x) {
    const auto b = x.size(0), l = x.size(1);
    const auto parts = qkv(x).view({b, l, 3, heads_, head_dim_}).unbind(2);  // 3 x (B, L, heads, head_dim)
    auto q = parts[0], k = parts[1];
    if (ln_q) {
      q = ln_q(q);
      k = ln_k(k);
    }
    return {q.reshape({b, l, -1}), k.reshape({b, l, -1}), parts[2].reshape({b, l, -1})};
  }
  torch::Tensor post_attention(const torch::Tensor& x) { return proj(x); }
  std::int64_t heads() const { return heads_; }

  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  RMSNorm ln_q{nullptr}, ln_k{nullptr};

 private:
  std::int64_t heads_, head_dim_;
};
TORCH_MODULE(SelfAttention);

}  // namespace diffuse::nn
