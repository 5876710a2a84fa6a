#pragma once
// The T5 v1.1 encoder of SD3 (T5-XXL), with the checkpoint's module names (encoder.*).
//
// Per block: RMS norm ("T5LayerNorm": no mean subtraction, no bias, eps 1e-6, computed in
// float32) -> self-attention with NO 1/sqrt(d) scaling and an additive relative-position bias
// -> residual; RMS norm -> gated-GELU feed-forward wo(gelu_tanh(wi_0 x) * wi_1 x) -> residual;
// final RMS norm. The bias table lives in block 0 and its (heads, L, L) bias is computed once and
// shared by every block (SD3_FACTS (c)). Padding is attended (no mask), as in SD3's reference.
// Run in float32 by default: T5's feed-forward overflows float16.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/encoders/text_encoder_config.hpp"
#include "diffuse/nn/gelu_tanh.hpp"
#include "diffuse/nn/layers.hpp"
#include "diffuse/io/module_weights.hpp"

namespace diffuse::encoders {

// T5's bidirectional relative-position buckets of `relative` (key position - query position):
// half the buckets for each sign; exact buckets below num_buckets/4, logarithmic ones up to
// max_distance (Raffel et al. 2020, section 2.1; the arithmetic as the reference runs it, in float32).
inline torch::Tensor t5_relative_buckets(const torch::Tensor& relative, std::int64_t num_buckets, std::int64_t max_distance) {
  const auto half = num_buckets / 2;
  auto buckets = (relative > 0).to(torch::kLong) * half;
  const auto n = relative.abs();
  const auto max_exact = half / 2;
  const auto is_small = n < max_exact;
  auto large = max_exact + (torch::log(n.to(torch::kFloat32) / static_cast<double>(max_exact)) /
                            std::log(static_cast<double>(max_distance) / static_cast<double>(max_exact)) *
                            static_cast<double>(half - max_exact))
                               .to(torch::kLong);
  large = torch::clamp_max(large, half - 1);
  return buckets + torch::where(is_small, n, large);
}

class T5RMSNormImpl : public torch::nn::Module {
 public:
  T5RMSNormImpl(std::int64_t dim, double eps) : eps_(eps) { weight = register_parameter("weight", torch::ones({dim})); }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto xf = x.to(torch::kFloat32);
    const auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps_);
    return weight * y.to(weight.scalar_type());
  }
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(T5RMSNorm);

class T5AttentionImpl : public torch::nn::Module {
 public:
  T5AttentionImpl(const T5Config& c, bool has_bias) : heads_(c.heads), d_kv_(c.d_kv), buckets_(c.buckets), max_distance_(c.max_distance) {
    q = register_module("q", nn::linear(c.d_model, c.inner(), false));
    k = register_module("k", nn::linear(c.d_model, c.inner(), false));
    v = register_module("v", nn::linear(c.d_model, c.inner(), false));
    o = register_module("o", nn::linear(c.inner(), c.d_model, false));
    if (has_bias) relative_attention_bias = register_module("relative_attention_bias", nn::embedding(c.buckets, c.heads));
  }
  // The additive bias (1, heads, L, L) for a sequence of L tokens.
  torch::Tensor position_bias(std::int64_t l) {
    const auto opts = torch::TensorOptions().dtype(torch::kLong).device(relative_attention_bias->weight.device());
    const auto pos = torch::arange(l, opts);
    const auto relative = pos.unsqueeze(0) - pos.unsqueeze(1);  // [query, key] = key - query
    const auto values = relative_attention_bias(t5_relative_buckets(relative, buckets_, max_distance_));  // (L, L, heads)
    return values.permute({2, 0, 1}).unsqueeze(0);
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias) {
    const auto b = x.size(0), l = x.size(1);
    auto heads = [&](const torch::Tensor& t) { return t.view({b, l, heads_, d_kv_}).transpose(1, 2); };
    auto scores = torch::matmul(heads(q(x)), heads(k(x)).transpose(-1, -2)) + bias;  // no 1/sqrt(d)
    const auto out = torch::matmul(scores.softmax(-1), heads(v(x)));
    return o(out.transpose(1, 2).reshape({b, l, heads_ * d_kv_}));
  }
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
  torch::nn::Embedding relative_attention_bias{nullptr};

 private:
  std::int64_t heads_, d_kv_, buckets_, max_distance_;
};
TORCH_MODULE(T5Attention);

class T5FeedForwardImpl : public torch::nn::Module {
 public:
  explicit T5FeedForwardImpl(const T5Config& c) {
    wi_0 = register_module("wi_0", nn::linear(c.d_model, c.d_ff, false));
    wi_1 = register_module("wi_1", nn::linear(c.d_model, c.d_ff, false));
    wo = register_module("wo", nn::linear(c.d_ff, c.d_model, false));
  }
  torch::Tensor forward(const torch::Tensor& x) { return wo(nn::gelu_tanh(wi_0(x)) * wi_1(x)); }
  torch::nn::Linear wi_0{nullptr}, wi_1{nullptr}, wo{nullptr};
};
TORCH_MODULE(T5FeedForward);

class T5BlockImpl : public torch::nn::Module {
 public:
  T5BlockImpl(const T5Config& c, bool has_bias) {
    auto layer = register_module("layer", torch::nn::ModuleList());
    auto attn_layer = std::make_shared<torch::nn::Module>();
    attention = attn_layer->register_module("SelfAttention", T5Attention(c, has_bias));
    norm1 = attn_layer->register_module("layer_norm", T5RMSNorm(c.d_model, c.eps));
    auto ff_layer = std::make_shared<torch::nn::Module>();
    feed_forward = ff_layer->register_module("DenseReluDense", T5FeedForward(c));
    norm2 = ff_layer->register_module("layer_norm", T5RMSNorm(c.d_model, c.eps));
    layer->push_back(attn_layer);
    layer->push_back(ff_layer);
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& bias) {
    x = x + attention(norm1(x), bias);
    return x + feed_forward(norm2(x));
  }
  T5Attention attention{nullptr};
  T5FeedForward feed_forward{nullptr};
  T5RMSNorm norm1{nullptr}, norm2{nullptr};
};
TORCH_MODULE(T5Block);

struct T5Output {
  std::vector<torch::Tensor> layers;  // layers[i]: output of block i, no final norm
  torch::Tensor last_hidden;          // final norm of the last block's output (SD3's sequence)
  torch::Tensor position_bias;        // (1, heads, L, L)
};

class T5EncoderImpl : public torch::nn::Module {
 public:
  explicit T5EncoderImpl(const T5Config& c) : config_(c) {
    c.validate();
    encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
    embed_tokens = encoder->register_module("embed_tokens", nn::embedding(c.vocab, c.d_model));
    blocks = encoder->register_module("block", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) blocks->push_back(T5Block(c, i == 0));
    final_layer_norm = encoder->register_module("final_layer_norm", T5RMSNorm(c.d_model, c.eps));
  }

  T5Output forward(const torch::Tensor& tokens) {
    if (tokens.dim() != 2) throw InputError("T5 encoder: tokens must be (batch, length), got " + format_shape(tokens.sizes().vec()));
    const auto max_id = tokens.max().item<std::int64_t>(), min_id = tokens.min().item<std::int64_t>();
    if (min_id < 0 || max_id >= config_.vocab)
      throw InputError("T5 encoder: token id " + std::to_string(min_id < 0 ? min_id : max_id) + " is outside 0.." +
                       std::to_string(config_.vocab - 1));
    auto x = embed_tokens(tokens);
    T5Output out;
    out.position_bias = blocks[0]->as<T5Block>()->attention->position_bias(tokens.size(1)).to(x.scalar_type());
    for (auto& b : *blocks) {
      x = b->as<T5Block>()->forward(x, out.position_bias);
      out.layers.push_back(x);
    }
    out.last_hidden = final_layer_norm(x);
    return out;
  }
  const T5Config& config() const { return config_; }

  std::shared_ptr<torch::nn::Module> encoder;
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  T5RMSNorm final_layer_norm{nullptr};

 private:
  T5Config config_;
};
TORCH_MODULE(T5Encoder);

// Loads a T5 encoder stored under `prefix` ("" for t5xxl_*.safetensors, "text_encoders.t5xxl.transformer."
// in SD3's all-in-one file). The embedding may be stored as `shared.weight` (tied) instead of
// `encoder.embed_tokens.weight`; decoder tensors, if any, are ignored.
inline T5Encoder load_t5_encoder(const io::WeightFiles& f, const std::string& prefix,
                                 std::optional<T5Config> config = std::nullopt,
                                 std::optional<torch::ScalarType> dtype = torch::kFloat32) {
  const auto c = config ? *config : detect_t5_config(f.header(), prefix, f.path());
  auto m = io::construct_for_loading(dtype.value_or(torch::kFloat32), [&] { return T5Encoder(c); });
  io::ModuleWeightsOptions o;
  o.dtype = dtype;
  o.aliases = {{"encoder.embed_tokens.weight", "shared.weight"}};
  o.owned = {"encoder."};
  io::load_module_weights(*m, f, prefix, o, "T5 encoder");
  m->eval();
  return m;
}

}  // namespace diffuse::encoders
