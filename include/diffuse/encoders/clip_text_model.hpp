#pragma once
// The CLIP text transformer of SD3's two CLIP encoders (CLIP-L and OpenCLIP bigG), with the
// Hugging Face module names that SD3's files use (text_model.*, text_projection.weight).
//
// Token + position embeddings, pre-LN layers (LayerNorm eps 1e-5, causal self-attention with
// biases, MLP with quick-GELU x*sigmoid(1.702x) or exact GELU), final LayerNorm. SD3 takes the
// penultimate layer's output *without* the final LayerNorm as the sequence, and the final
// LayerNorm's output at the first EOS (argmax of the ids: EOS has the largest id) as the pooled
// vector, projected for bigG and not for CLIP-L (SD3_FACTS (c)).
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include "diffuse/encoders/text_encoder_config.hpp"
#include "diffuse/io/module_weights.hpp"
#include "diffuse/nn/layers.hpp"

namespace diffuse::encoders {

class CLIPAttentionImpl : public torch::nn::Module {
 public:
  CLIPAttentionImpl(std::int64_t width, std::int64_t heads) : heads_(heads) {
    q_proj = register_module("q_proj", nn::linear(width, width));
    k_proj = register_module("k_proj", nn::linear(width, width));
    v_proj = register_module("v_proj", nn::linear(width, width));
    out_proj = register_module("out_proj", nn::linear(width, width));
  }
  // x: (B, L, W); mask: (L, L) added to the scores.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask) {
    const auto b = x.size(0), l = x.size(1), d = x.size(2) / heads_;
    auto heads = [&](const torch::Tensor& t) { return t.view({b, l, heads_, d}).transpose(1, 2); };
    const auto q = heads(q_proj(x)), k = heads(k_proj(x)), v = heads(v_proj(x));
    auto scores = torch::matmul(q, k.transpose(-1, -2)) * (1.0 / std::sqrt(static_cast<double>(d))) + mask;
    const auto out = torch::matmul(scores.softmax(-1), v);
    return out_proj(out.transpose(1, 2).reshape({b, l, heads_ * d}));
  }
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

 private:
  std::int64_t heads_;
};
TORCH_MODULE(CLIPAttention);

class CLIPMlpImpl : public torch::nn::Module {
 public:
  CLIPMlpImpl(std::int64_t width, std::int64_t hidden, bool quick_gelu) : quick_gelu_(quick_gelu) {
    fc1 = register_module("fc1", nn::linear(width, hidden));
    fc2 = register_module("fc2", nn::linear(hidden, width));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = fc1(x);
    h = quick_gelu_ ? h * torch::sigmoid(1.702 * h) : torch::gelu(h);
    return fc2(h);
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  bool quick_gelu_;
};
TORCH_MODULE(CLIPMlp);

class CLIPLayerImpl : public torch::nn::Module {
 public:
  explicit CLIPLayerImpl(const CLIPTextConfig& c) {
    const auto ln = torch::nn::LayerNormOptions({c.width}).eps(c.eps);
    layer_norm1 = register_module("layer_norm1", torch::nn::LayerNorm(ln));
    self_attn = register_module("self_attn", CLIPAttention(c.width, c.num_heads()));
    layer_norm2 = register_module("layer_norm2", torch::nn::LayerNorm(ln));
    mlp = register_module("mlp", CLIPMlp(c.width, c.mlp_hidden(), c.activation == "quick_gelu"));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask) {
    x = x + self_attn(layer_norm1(x), mask);
    return x + mlp(layer_norm2(x));
  }
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  CLIPAttention self_attn{nullptr};
  CLIPMlp mlp{nullptr};
};
TORCH_MODULE(CLIPLayer);

struct CLIPTextOutput {
  std::vector<torch::Tensor> layers;  // layers[i]: output of layer i, (B, L, W), no final LayerNorm
  torch::Tensor last_hidden;          // final LayerNorm of the last layer's output
  torch::Tensor pooled;               // last_hidden at the first EOS, (B, W)
  torch::Tensor pooled_projected;     // text_projection(pooled) when the model has one
  torch::Tensor penultimate() const { return layers.at(layers.size() - 2); }  // SD3's sequence output
};

class CLIPTextModelImpl : public torch::nn::Module {
 public:
  explicit CLIPTextModelImpl(const CLIPTextConfig& c) : config_(c) {
    c.validate();
    text_model = register_module("text_model", std::make_shared<torch::nn::Module>());
    embeddings = text_model->register_module("embeddings", std::make_shared<torch::nn::Module>());
    token_embedding = embeddings->register_module("token_embedding", nn::embedding(c.vocab, c.width));
    position_embedding = embeddings->register_module("position_embedding", nn::embedding(c.positions, c.width));
    auto encoder = text_model->register_module("encoder", std::make_shared<torch::nn::Module>());
    layers = encoder->register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.layers; ++i) layers->push_back(CLIPLayer(c));
    final_layer_norm = text_model->register_module(
        "final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.width}).eps(c.eps)));
    if (c.projection)
      text_projection = register_module("text_projection", nn::linear(c.width, c.width, false));
  }

  // tokens: (B, L) int64 with L <= positions.
  CLIPTextOutput forward(const torch::Tensor& tokens) {
    if (tokens.dim() != 2 || tokens.size(1) > config_.positions)
      throw InputError("CLIP text model: tokens must be (batch, length <= " + std::to_string(config_.positions) +
                       "), got " + format_shape(tokens.sizes().vec()));
    const auto max_id = tokens.max().item<std::int64_t>(), min_id = tokens.min().item<std::int64_t>();
    if (min_id < 0 || max_id >= config_.vocab)
      throw InputError("CLIP text model: token id " + std::to_string(min_id < 0 ? min_id : max_id) + " is outside 0.." +
                       std::to_string(config_.vocab - 1));
    const auto l = tokens.size(1);
    const auto& w = token_embedding->weight;
    auto x = token_embedding(tokens) + position_embedding->weight.narrow(0, 0, l);
    const auto mask = torch::full({l, l}, -std::numeric_limits<float>::infinity(), w.options()).triu(1);
    CLIPTextOutput out;
    for (auto& layer : *layers) {
      x = layer->as<CLIPLayer>()->forward(x, mask);
      out.layers.push_back(x);
    }
    out.last_hidden = final_layer_norm(x);
    const auto eos = tokens.argmax(-1);  // first EOS: the largest id
    out.pooled = out.last_hidden.index({torch::arange(tokens.size(0)), eos});
    if (text_projection) out.pooled_projected = text_projection(out.pooled);
    return out;
  }

  const CLIPTextConfig& config() const { return config_; }

  std::shared_ptr<torch::nn::Module> text_model, embeddings;
  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
  torch::nn::Linear text_projection{nullptr};

 private:
  CLIPTextConfig config_;
};
TORCH_MODULE(CLIPTextModel);

// Loads a CLIP text model stored under `prefix` ("" for clip_l.safetensors / clip_g.safetensors,
// "text_encoders.clip_l.transformer." in SD3's all-in-one file). The config is detected from the
// shapes unless given.
inline CLIPTextModel load_clip_text_model(const io::WeightFiles& f, const std::string& prefix,
                                          std::optional<CLIPTextConfig> config = std::nullopt,
                                          std::optional<torch::ScalarType> dtype = torch::kFloat32) {
  const auto c = config ? *config : detect_clip_config(f.header(), prefix, f.path());
  auto m = io::construct_for_loading(dtype.value_or(torch::kFloat32), [&] { return CLIPTextModel(c); });
  io::ModuleWeightsOptions o;
  o.dtype = dtype;
  o.owned = {"text_model.", "text_projection."};
  // Some exports keep the position ids buffer; it is arange(77) and not a parameter.
  o.ignored = {"text_model.embeddings.position_ids"};
  io::load_module_weights(*m, f, prefix, o, "CLIP text model");
  m->eval();
  return m;
}

}  // namespace diffuse::encoders
