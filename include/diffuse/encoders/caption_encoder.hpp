#pragma once
// The shapes task's text encoder, in SD3's form: a small pre-LN transformer over caption token ids
// that gives a token sequence (the MM-DiT's context) and a pooled vector (its y).
//
// It is frozen, as SD3's CLIP and T5 are: its weights are a seeded initialisation stored with the
// model, which is what lets the features be computed once into the cache (SD3 paper, Table 7) and
// keeps a training step free of text-encoder work. The trainable capacity for language sits in
// the MM-DiT's context stream, which sees every token. Random frozen features keep tokens apart
// (nearly orthogonal embeddings plus sin-cos positions); the pooled vector is the mean of the
// final states over the caption's real tokens (pad excluded), EOS included.
#include <cmath>
#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include "diffuse/core/config.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/nn/attention.hpp"
#include "diffuse/nn/mlp.hpp"
#include "diffuse/nn/self_attention.hpp"

namespace diffuse::encoders {

struct CaptionEncoderConfig {
  BOOST_HANA_DEFINE_STRUCT(CaptionEncoderConfig,
                           (int, vocab_size),  // 0: taken from the tokenizer
                           (int, width), (int, layers), (int, heads),
                           (int, length),      // tokens per caption, EOS and padding included
                           (std::uint64_t, seed));
  static CaptionEncoderConfig shapes_default() { return {0, 64, 2, 2, 12, 7}; }
  void validate() const {
    if (vocab_size < 3 || width < 8 || layers < 0 || heads < 1 || width % heads || length < 2)
      throw InputError("caption encoder config: need vocab_size >= 3, width >= 8 divisible by heads, layers >= 0, length >= 2");
  }
};

struct TextFeatures {
  torch::Tensor context;  // (B, L, width)
  torch::Tensor pooled;   // (B, width)
};

class CaptionEncoderLayerImpl : public torch::nn::Module {
 public:
  CaptionEncoderLayerImpl(int width, int heads) {
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
    attn = register_module("attn", nn::SelfAttention(width, heads, false, false));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
    mlp = register_module("mlp", nn::Mlp(width, 4 * width));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto qkv = attn->pre_attention(norm1(x));
    const auto h = x + attn->post_attention(nn::attention(qkv.q, qkv.k, qkv.v, attn->heads()));
    return h + mlp(norm2(h));
  }
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  nn::SelfAttention attn{nullptr};
  nn::Mlp mlp{nullptr};
};
TORCH_MODULE(CaptionEncoderLayer);

// 1-D sin-cos positions (Vaswani et al. 2017, section 3.5): (length, width).
inline torch::Tensor sincos_positions(int length, int width) {
  const auto pos = torch::arange(length, torch::kFloat64).unsqueeze(1);
  const auto k = torch::arange(width / 2, torch::kFloat64).unsqueeze(0);
  const auto angle = pos * torch::exp(-std::log(10000.0) * 2.0 * k / width);
  return torch::cat({torch::sin(angle), torch::cos(angle)}, 1).to(torch::kFloat32);
}

class CaptionEncoderImpl : public torch::nn::Module {
 public:
  explicit CaptionEncoderImpl(CaptionEncoderConfig c) : config_(c) {
    config_.validate();
    torch::manual_seed(c.seed);  // the weights are part of the model: the same seed, the same encoder
    token_embedding = register_module("token_embedding", torch::nn::Embedding(c.vocab_size, c.width));
    positions = register_buffer("positions", sincos_positions(c.length, c.width));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) layers->push_back(CaptionEncoderLayer(c.width, c.heads));
    final_norm = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.width})));
    for (auto& p : parameters()) p.set_requires_grad(false);
  }
  const CaptionEncoderConfig& config() const { return config_; }

  // ids: (B, length) int64 from CaptionTokenizer (pad 0).
  TextFeatures forward(const torch::Tensor& ids) {
    if (ids.dim() != 2 || ids.size(1) != config_.length || ids.scalar_type() != torch::kLong)
      throw InputError("caption encoder: ids must be int64 [B, " + std::to_string(config_.length) + "]");
    if (ids.numel() && (ids.min().item<std::int64_t>() < 0 || ids.max().item<std::int64_t>() >= config_.vocab_size))
      throw InputError("caption encoder: token id outside the vocabulary of " + std::to_string(config_.vocab_size));
    auto x = token_embedding(ids) + positions.unsqueeze(0);
    for (const auto& l : *layers) x = l->as<CaptionEncoderLayer>()->forward(x);
    x = final_norm(x);
    const auto real = (ids != 0).to(x.scalar_type()).unsqueeze(2);  // (B, L, 1)
    const auto pooled = (x * real).sum(1) / real.sum(1).clamp_min(1.0);
    return {x, pooled};
  }

  torch::nn::Embedding token_embedding{nullptr};
  torch::Tensor positions;
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm final_norm{nullptr};

 private:
  CaptionEncoderConfig config_;
};
TORCH_MODULE(CaptionEncoder);

}  // namespace diffuse::encoders
