#pragma once
// Configs of SD3's text encoders (torch-free): CLIP text transformers and the T5 encoder, their
// presets, reading Hugging Face config.json files, detection from checkpoint shapes, and the full
// key list (names and shapes) of a config without allocating a tensor.
//
// Shapes and names: ../shared/docs/SD3_FACTS.md section (c). CLIP-L: 12 layers, width 768, 12
// heads, MLP 3072, quick-GELU. OpenCLIP bigG: 32 layers, width 1280, 20 heads, MLP 5120, GELU,
// text projection 1280x1280. T5-XXL v1.1: 24 blocks, d_model 4096, 64 heads of 64, FF 10240
// gated-GELU, 32 relative-position buckets up to distance 128, vocabulary 32128.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <boost/hana/define_struct.hpp>
#include <nlohmann/json.hpp>

#include "diffuse/core/config.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/io/safetensors_header.hpp"

namespace diffuse::encoders {

using KeyShapes = std::vector<std::pair<std::string, std::vector<std::int64_t>>>;

struct CLIPTextConfig {
  BOOST_HANA_DEFINE_STRUCT(CLIPTextConfig,
                           (int, vocab),           // token embedding rows (49408)
                           (int, positions),       // position table (77)
                           (int, width),           // hidden size
                           (int, layers),
                           (int, heads),           // 0: width / 64 (1 when width is not a multiple of 64)
                           (int, mlp),             // 0: 4 * width
                           (std::string, activation),  // "quick_gelu" (CLIP-L) or "gelu" (bigG)
                           (bool, projection),     // text_projection.weight present
                           (double, eps));         // LayerNorm eps (1e-5)
  int num_heads() const { return heads > 0 ? heads : (width % 64 == 0 ? width / 64 : 1); }
  int mlp_hidden() const { return mlp > 0 ? mlp : 4 * width; }
  void validate() const {
    auto bad = [](const std::string& m) { throw InputError("CLIP text config: " + m); };
    if (vocab < 1 || positions < 1 || width < 1 || layers < 1) bad("vocab, positions, width and layers must be positive");
    if (num_heads() < 1 || width % num_heads()) bad("width " + std::to_string(width) + " is not divisible by heads");
    if (activation != "quick_gelu" && activation != "gelu")
      bad("activation must be quick_gelu or gelu, got '" + activation + "'");
  }
};

inline CLIPTextConfig clip_l_config() { return {49408, 77, 768, 12, 12, 3072, "quick_gelu", true, 1e-5}; }
inline CLIPTextConfig clip_g_config() { return {49408, 77, 1280, 32, 20, 5120, "gelu", true, 1e-5}; }

struct T5Config {
  BOOST_HANA_DEFINE_STRUCT(T5Config,
                           (int, vocab),           // 32128
                           (int, d_model),         // 4096
                           (int, d_kv),            // per-head size (64)
                           (int, heads),           // 64
                           (int, layers),          // 24
                           (int, d_ff),            // 10240
                           (int, buckets),         // relative-position buckets (32)
                           (int, max_distance),    // 128
                           (double, eps));         // RMS norm eps (1e-6)
  int inner() const { return d_kv * heads; }
  void validate() const {
    if (vocab < 1 || d_model < 1 || d_kv < 1 || heads < 1 || layers < 1 || d_ff < 1 || buckets < 2 || max_distance < 2)
      throw InputError("T5 config: every size must be positive (buckets and max_distance at least 2)");
  }
};

inline T5Config t5_xxl_config() { return {32128, 4096, 64, 64, 24, 10240, 32, 128, 1e-6}; }

namespace detail {
// The Hugging Face config.json names, or the `config_dict` of a reference test-vector JSON.
inline const nlohmann::json& config_body(const nlohmann::json& j) {
  return j.contains("config_dict") && j["config_dict"].is_object() ? j["config_dict"] : j;
}
template <class T>
void take(const nlohmann::json& j, const char* key, T& out) {
  if (j.contains(key) && !j[key].is_null()) out = j[key].get<T>();
}
}  // namespace detail

// A CLIP text config from our own JSON (CLIPTextConfig's names), a Hugging Face config.json
// (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act, ...), or a
// reference test-vector JSON (its config_dict). Keys it lacks keep `base`.
inline CLIPTextConfig clip_config_from_json(const nlohmann::json& j, CLIPTextConfig base) {
  const auto& b = detail::config_body(j);
  if (!b.contains("hidden_size")) return config_from_json<CLIPTextConfig>(b, base);
  try {
    detail::take(b, "vocab_size", base.vocab);
    detail::take(b, "max_position_embeddings", base.positions);
    detail::take(b, "hidden_size", base.width);
    detail::take(b, "num_hidden_layers", base.layers);
    detail::take(b, "num_attention_heads", base.heads);
    detail::take(b, "intermediate_size", base.mlp);
    detail::take(b, "hidden_act", base.activation);
    detail::take(b, "layer_norm_eps", base.eps);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(std::string("CLIP text config: ") + e.what());
  }
  return base;
}

inline T5Config t5_config_from_json(const nlohmann::json& j, T5Config base) {
  const auto& b = detail::config_body(j);
  if (!b.contains("num_heads") && !b.contains("num_layers")) return config_from_json<T5Config>(b, base);
  try {
    detail::take(b, "vocab_size", base.vocab);
    detail::take(b, "d_model", base.d_model);
    detail::take(b, "d_kv", base.d_kv);
    detail::take(b, "num_heads", base.heads);
    detail::take(b, "num_layers", base.layers);
    detail::take(b, "d_ff", base.d_ff);
    detail::take(b, "relative_attention_num_buckets", base.buckets);
    detail::take(b, "relative_attention_max_distance", base.max_distance);
    detail::take(b, "layer_norm_epsilon", base.eps);
    if (b.contains("d_model") && b.contains("num_heads") && !b.contains("d_kv")) base.d_kv = base.d_model / base.heads;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(std::string("T5 config: ") + e.what());
  }
  return base;
}

// Sizes read from a checkpoint's shapes under `prefix`. CLIP's head count and activation are not
// in the shapes: CLIP-L (width 768, 12 layers) and bigG (1280, 32, or under a clip_g / text_encoder_2
// prefix) get theirs; others get width / 64 heads and quick-GELU unless a config says otherwise.
inline CLIPTextConfig detect_clip_config(const io::Header& h, const std::string& prefix, const std::string& path) {
  const std::string p = prefix + "text_model.";
  const auto* tok = h.find(p + "embeddings.token_embedding.weight");
  const auto* pos = h.find(p + "embeddings.position_embedding.weight");
  const auto* fc1 = h.find(p + "encoder.layers.0.mlp.fc1.weight");
  if (!tok || !pos || !fc1 || tok->shape.size() != 2 || pos->shape.size() != 2 || fc1->shape.size() != 2)
    throw InputError(path + ": no CLIP text model under '" + prefix + "' (expected " + p +
                     "embeddings.token_embedding.weight and encoder.layers.0.mlp.fc1.weight)");
  CLIPTextConfig c;
  c.vocab = static_cast<int>(tok->shape[0]);
  c.width = static_cast<int>(tok->shape[1]);
  c.positions = static_cast<int>(pos->shape[0]);
  c.mlp = static_cast<int>(fc1->shape[0]);
  c.layers = 0;
  while (h.find(p + "encoder.layers." + std::to_string(c.layers) + ".mlp.fc1.weight")) ++c.layers;
  c.projection = h.find(prefix + "text_projection.weight") != nullptr;
  c.eps = 1e-5;
  c.heads = 0;  // width / 64
  c.activation = "quick_gelu";
  // OpenCLIP bigG uses GELU: by its size, or by where SD3's and diffusers' files keep it.
  if ((c.width == 1280 && c.layers == 32) || prefix.find("clip_g") != std::string::npos ||
      prefix.find("text_encoder_2") != std::string::npos)
    c.activation = "gelu";
  return c;
}

inline T5Config detect_t5_config(const io::Header& h, const std::string& prefix, const std::string& path) {
  const std::string b0 = prefix + "encoder.block.0.layer.";
  const auto* q = h.find(b0 + "0.SelfAttention.q.weight");
  const auto* rel = h.find(b0 + "0.SelfAttention.relative_attention_bias.weight");
  const auto* wi = h.find(b0 + "1.DenseReluDense.wi_0.weight");
  const auto* emb = h.find(prefix + "encoder.embed_tokens.weight");
  if (!emb) emb = h.find(prefix + "shared.weight");
  if (!q || !rel || !wi || !emb || q->shape.size() != 2 || rel->shape.size() != 2 || wi->shape.size() != 2)
    throw InputError(path + ": no T5 encoder under '" + prefix + "' (expected " + b0 +
                     "0.SelfAttention.q.weight, its relative_attention_bias, DenseReluDense.wi_0 and the embedding)");
  T5Config c;
  c.vocab = static_cast<int>(emb->shape[0]);
  c.d_model = static_cast<int>(q->shape[1]);
  c.buckets = static_cast<int>(rel->shape[0]);
  c.heads = static_cast<int>(rel->shape[1]);
  c.d_kv = static_cast<int>(q->shape[0]) / c.heads;
  c.d_ff = static_cast<int>(wi->shape[0]);
  c.layers = 0;
  while (h.find(prefix + "encoder.block." + std::to_string(c.layers) + ".layer.0.SelfAttention.q.weight")) ++c.layers;
  c.max_distance = 128;  // not stored; T5 v1.1's value
  c.eps = 1e-6;
  return c;
}

// Every tensor of a CLIP text model with `config` (Hugging Face names, as in SD3's files).
inline KeyShapes clip_keys(const CLIPTextConfig& c) {
  const std::int64_t w = c.width, m = c.mlp_hidden();
  KeyShapes k{{"text_model.embeddings.token_embedding.weight", {c.vocab, w}},
              {"text_model.embeddings.position_embedding.weight", {c.positions, w}}};
  for (int i = 0; i < c.layers; ++i) {
    const auto p = "text_model.encoder.layers." + std::to_string(i) + ".";
    for (const char* n : {"layer_norm1", "layer_norm2"}) {
      k.push_back({p + n + ".weight", {w}});
      k.push_back({p + n + ".bias", {w}});
    }
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      k.push_back({p + "self_attn." + n + ".weight", {w, w}});
      k.push_back({p + "self_attn." + n + ".bias", {w}});
    }
    k.push_back({p + "mlp.fc1.weight", {m, w}});
    k.push_back({p + "mlp.fc1.bias", {m}});
    k.push_back({p + "mlp.fc2.weight", {w, m}});
    k.push_back({p + "mlp.fc2.bias", {w}});
  }
  k.push_back({"text_model.final_layer_norm.weight", {w}});
  k.push_back({"text_model.final_layer_norm.bias", {w}});
  if (c.projection) k.push_back({"text_projection.weight", {w, w}});
  return k;
}

inline KeyShapes t5_keys(const T5Config& c) {
  const std::int64_t d = c.d_model, in = c.inner(), f = c.d_ff;
  KeyShapes k{{"encoder.embed_tokens.weight", {c.vocab, d}}};
  for (int i = 0; i < c.layers; ++i) {
    const auto p = "encoder.block." + std::to_string(i) + ".layer.";
    for (const char* n : {"q", "k", "v"}) k.push_back({p + "0.SelfAttention." + n + ".weight", {in, d}});
    k.push_back({p + "0.SelfAttention.o.weight", {d, in}});
    if (i == 0) k.push_back({p + "0.SelfAttention.relative_attention_bias.weight", {c.buckets, c.heads}});
    k.push_back({p + "0.layer_norm.weight", {d}});
    k.push_back({p + "1.DenseReluDense.wi_0.weight", {f, d}});
    k.push_back({p + "1.DenseReluDense.wi_1.weight", {f, d}});
    k.push_back({p + "1.DenseReluDense.wo.weight", {d, f}});
    k.push_back({p + "1.layer_norm.weight", {d}});
  }
  k.push_back({"encoder.final_layer_norm.weight", {d}});
  return k;
}

inline std::int64_t parameter_count(const KeyShapes& keys) {
  std::int64_t n = 0;
  for (const auto& [name, shape] : keys) {
    std::int64_t e = 1;
    for (auto s : shape) e *= s;
    n += e;
  }
  return n;
}

}  // namespace diffuse::encoders
