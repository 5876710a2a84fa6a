#pragma once
// The per-stream attention projections of an MM-DiT block: qkv (one Linear whose rows are
// [q; k; v]), optional per-head RMSNorm of q and k (ln_q, ln_k), and the output projection proj.
// The attention itself runs jointly over both streams (backbone/mmdit.hpp).
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/nn/layers.hpp"
#include "diffuse/nn/qkv_rms_norm.hpp"
#include "diffuse/nn/rms_norm.hpp"
#include "diffuse/nn/rowwise_linear.hpp"

namespace diffuse::nn {

class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(std::int64_t dim, std::int64_t heads, bool qk_norm, bool pre_only, bool qkv_bias = true)
      : heads_(heads), head_dim_(dim / heads) {
    qkv = register_module("qkv", nn::linear(dim, 3 * dim, qkv_bias));
    if (!pre_only) proj = register_module("proj", nn::linear(dim, dim));
    if (qk_norm) {
      ln_q = register_module("ln_q", RMSNorm(head_dim_));
      ln_k = register_module("ln_k", RMSNorm(head_dim_));
    }
  }

  // x: (B, L, D) already normalised and modulated.
  QKV pre_attention(const torch::Tensor& x) {
    return split_qkv_rms_norm(rowwise_linear(qkv, x), heads_, ln_q ? ln_q->weight : torch::Tensor(), ln_k ? ln_k->weight : torch::Tensor(),
                              ln_q ? ln_q->eps() : 1e-6);
  }
  torch::Tensor post_attention(const torch::Tensor& x) { return rowwise_linear(proj, x); }
  std::int64_t heads() const { return heads_; }

  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  RMSNorm ln_q{nullptr}, ln_k{nullptr};

 private:
  std::int64_t heads_, head_dim_;
};
TORCH_MODULE(SelfAttention);

}  // namespace diffuse::nn
