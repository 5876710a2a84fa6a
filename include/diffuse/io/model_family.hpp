#pragma once
// Recognising what a checkpoint holds from its tensor names and shapes alone (torch-free).
//
// Rules follow ../docs/checkpoints.md (from SD3_FACTS: the reference's and diffusers' loaders):
// MM-DiT depth = x_embedder.proj.weight.shape[0] / 64, pos_embed_max_size = sqrt(pos_embed.shape[1]),
// QK-norm iff joint_blocks.0.context_block.attn.ln_k.weight exists, MMDiT-X layers = the blocks with
// x_block.attn2.*; SD3-medium vs SD3.5-medium by pos_embed length (36864 vs 147456), SD3.5-large by
// depth 38. A file may hold several components (the all-in-one SD3 checkpoint); each is reported
// with the key prefix it lives under.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/io/safetensors_header.hpp"

namespace diffuse::io {

enum class ComponentKind { MMDiT, Autoencoder, CLIPText, T5Encoder };
enum class KeyLayout { Original, Diffusers };

constexpr std::string_view to_string(ComponentKind k) {
  switch (k) {
    case ComponentKind::MMDiT: return "MM-DiT";
    case ComponentKind::Autoencoder: return "KL autoencoder";
    case ComponentKind::CLIPText: return "CLIP text model";
    case ComponentKind::T5Encoder: return "T5 encoder";
  }
  return "?";
}
constexpr std::string_view to_string(KeyLayout l) { return l == KeyLayout::Original ? "original" : "diffusers"; }

struct Component {
  ComponentKind kind;
  KeyLayout layout = KeyLayout::Original;
  std::string prefix;                          // e.g. "model.diffusion_model." or ""
  std::string family;                          // "SD3-medium", "CLIP-L", ... or "custom"
  std::map<std::string, std::int64_t> sizes;  // what was read from the shapes (depth, hidden, ...)
  std::size_t tensor_count = 0;                // tensors under this component's prefix
};

namespace detail {

class KeyIndex {
 public:
  explicit KeyIndex(const std::vector<TensorInfo>& tensors) {
    for (const auto& t : tensors) by_name_.emplace(t.name, &t);
  }
  const TensorInfo* find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }
  bool has(const std::string& name) const { return find(name) != nullptr; }
  std::int64_t dim(const std::string& name, std::size_t i) const {
    const auto* t = find(name);
    return t && t->shape.size() > i ? t->shape[i] : -1;
  }
  // Prefixes P such that P + suffix is a key.
  std::vector<std::string> prefixes_of(std::string_view suffix) const {
    std::vector<std::string> out;
    for (const auto& [name, t] : by_name_)
      if (name.size() >= suffix.size() && std::string_view(name).substr(name.size() - suffix.size()) == suffix)
        out.push_back(name.substr(0, name.size() - suffix.size()));
    return out;
  }
  // Distinct integers N for keys starting with `head` + N + ".".
  std::set<std::int64_t> indices(const std::string& head) const {
    std::set<std::int64_t> out;
    for (auto it = by_name_.lower_bound(head); it != by_name_.end() && it->first.starts_with(head); ++it) {
      std::string_view rest = std::string_view(it->first).substr(head.size());
      std::int64_t n = 0;
      std::size_t i = 0;
      while (i < rest.size() && i < 9 && rest[i] >= '0' && rest[i] <= '9') n = n * 10 + (rest[i++] - '0');
      if (i > 0 && i < rest.size() && rest[i] == '.') out.insert(n);
    }
    return out;
  }
  std::size_t count_prefix(const std::string& prefix) const {
    std::size_t n = 0;
    for (auto it = by_name_.lower_bound(prefix); it != by_name_.end() && it->first.starts_with(prefix); ++it) ++n;
    return n;
  }

 private:
  std::map<std::string, const TensorInfo*> by_name_;
};

inline std::int64_t isqrt(std::int64_t n) {
  if (n < 0) return -1;
  auto r = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(n))));
  return r * r == n ? r : -1;
}

inline void detect_mmdit(const KeyIndex& k, std::vector<Component>& out) {
  for (const auto& p : k.prefixes_of("x_embedder.proj.weight")) {
    if (!k.has(p + "final_layer.linear.weight")) continue;
    Component c{ComponentKind::MMDiT, KeyLayout::Original, p, "custom", {}, k.count_prefix(p)};
    const auto hidden = k.dim(p + "x_embedder.proj.weight", 0);
    c.sizes["hidden"] = hidden;
    c.sizes["depth"] = static_cast<std::int64_t>(k.indices(p + "joint_blocks.").size());
    c.sizes["patch"] = k.dim(p + "x_embedder.proj.weight", 2);
    c.sizes["in_channels"] = k.dim(p + "x_embedder.proj.weight", 1);
    c.sizes["pos_embed_max_size"] = isqrt(k.dim(p + "pos_embed", 1));
    c.sizes["adm_in"] = k.dim(p + "y_embedder.mlp.0.weight", 1);
    c.sizes["context_in"] = k.dim(p + "context_embedder.weight", 1);
    c.sizes["qk_norm"] = k.has(p + "joint_blocks.0.context_block.attn.ln_k.weight");
    std::int64_t x_attn = 0;
    for (auto i : k.indices(p + "joint_blocks."))
      x_attn += k.has(p + "joint_blocks." + std::to_string(i) + ".x_block.attn2.qkv.weight");
    c.sizes["x_self_attn_layers"] = x_attn;
    out.push_back(std::move(c));
  }
  for (const auto& p : k.prefixes_of("pos_embed.proj.weight")) {
    if (!k.has(p + "transformer_blocks.0.attn.to_q.weight")) continue;
    Component c{ComponentKind::MMDiT, KeyLayout::Diffusers, p, "custom", {}, k.count_prefix(p)};
    c.sizes["hidden"] = k.dim(p + "pos_embed.proj.weight", 0);
    c.sizes["depth"] = static_cast<std::int64_t>(k.indices(p + "transformer_blocks.").size());
    c.sizes["patch"] = k.dim(p + "pos_embed.proj.weight", 2);
    c.sizes["in_channels"] = k.dim(p + "pos_embed.proj.weight", 1);
    c.sizes["pos_embed_max_size"] = isqrt(k.dim(p + "pos_embed.pos_embed", 1));
    c.sizes["adm_in"] = k.dim(p + "time_text_embed.text_embedder.linear_1.weight", 1);
    c.sizes["context_in"] = k.dim(p + "context_embedder.weight", 1);
    c.sizes["qk_norm"] = k.has(p + "transformer_blocks.0.attn.norm_added_k.weight");
    std::int64_t x_attn = 0;
    for (auto i : k.indices(p + "transformer_blocks."))
      x_attn += k.has(p + "transformer_blocks." + std::to_string(i) + ".attn2.to_q.weight");
    c.sizes["x_self_attn_layers"] = x_attn;
    out.push_back(std::move(c));
  }
  for (auto& c : out) {
    if (c.kind != ComponentKind::MMDiT) continue;
    const auto& s = c.sizes;
    const bool sd3_block = s.at("patch") == 2 && s.at("in_channels") == 16 && s.at("adm_in") == 2048 &&
                           s.at("context_in") == 4096;
    if (!sd3_block) continue;
    if (s.at("hidden") == 1536 && s.at("depth") == 24 && s.at("pos_embed_max_size") == 192 && !s.at("qk_norm") &&
        s.at("x_self_attn_layers") == 0)
      c.family = "SD3-medium";
    else if (s.at("hidden") == 1536 && s.at("depth") == 24 && s.at("pos_embed_max_size") == 384 && s.at("qk_norm") &&
             s.at("x_self_attn_layers") == 13)
      c.family = "SD3.5-medium";
    else if (s.at("hidden") == 2432 && s.at("depth") == 38 && s.at("qk_norm") && s.at("x_self_attn_layers") == 0)
      c.family = "SD3.5-large";
  }
}

inline void detect_autoencoder(const KeyIndex& k, std::vector<Component>& out) {
  for (const auto& p : k.prefixes_of("decoder.conv_in.weight")) {
    Component c{ComponentKind::Autoencoder, KeyLayout::Original, p, "custom", {}, k.count_prefix(p)};
    if (k.has(p + "decoder.mid.attn_1.q.weight")) {
      c.layout = KeyLayout::Original;
      c.sizes["levels"] = static_cast<std::int64_t>(k.indices(p + "decoder.up.").size());
    } else if (k.has(p + "decoder.mid_block.attentions.0.to_q.weight")) {
      c.layout = KeyLayout::Diffusers;
      c.sizes["levels"] = static_cast<std::int64_t>(k.indices(p + "decoder.up_blocks.").size());
    } else {
      continue;
    }
    c.sizes["latent_channels"] = k.dim(p + "decoder.conv_in.weight", 1);
    c.sizes["width"] = k.has(p + "encoder.conv_in.weight") ? k.dim(p + "encoder.conv_in.weight", 0)
                                                            : k.dim(p + "decoder.conv_out.weight", 1);
    c.sizes["has_encoder"] = k.has(p + "encoder.conv_in.weight");
    if (c.sizes["latent_channels"] == 16 && c.sizes["width"] == 128 && c.sizes["levels"] == 4 &&
        k.dim(p + "decoder.conv_in.weight", 0) == 512)
      c.family = "SD3 VAE";
    out.push_back(std::move(c));
  }
}

inline void detect_clip(const KeyIndex& k, std::vector<Component>& out) {
  for (const auto& p : k.prefixes_of("text_model.embeddings.token_embedding.weight")) {
    Component c{ComponentKind::CLIPText, KeyLayout::Original, p, "custom", {}, k.count_prefix(p)};
    c.sizes["width"] = k.dim(p + "text_model.embeddings.token_embedding.weight", 1);
    c.sizes["vocab"] = k.dim(p + "text_model.embeddings.token_embedding.weight", 0);
    c.sizes["layers"] = static_cast<std::int64_t>(k.indices(p + "text_model.encoder.layers.").size());
    c.sizes["positions"] = k.dim(p + "text_model.embeddings.position_embedding.weight", 0);
    c.sizes["text_projection"] = k.has(p + "text_projection.weight");
    if (c.sizes["width"] == 768 && c.sizes["layers"] == 12) c.family = "CLIP-L";
    if (c.sizes["width"] == 1280 && c.sizes["layers"] == 32) c.family = "CLIP-G (OpenCLIP bigG)";
    out.push_back(std::move(c));
  }
}

inline void detect_t5(const KeyIndex& k, std::vector<Component>& out) {
  for (const auto& p : k.prefixes_of("encoder.block.0.layer.0.SelfAttention.q.weight")) {
    Component c{ComponentKind::T5Encoder, KeyLayout::Original, p, "custom", {}, k.count_prefix(p)};
    c.sizes["d_model"] = k.dim(p + "encoder.block.0.layer.0.SelfAttention.q.weight", 1);
    c.sizes["layers"] = static_cast<std::int64_t>(k.indices(p + "encoder.block.").size());
    c.sizes["d_ff"] = k.dim(p + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", 0);
    c.sizes["relative_buckets"] = k.dim(p + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 0);
    if (c.sizes["d_model"] == 4096 && c.sizes["layers"] == 24 && c.sizes["d_ff"] == 10240) c.family = "T5-XXL";
    out.push_back(std::move(c));
  }
}

}  // namespace detail

// Every component recognised in a checkpoint; empty when nothing is recognised.
inline std::vector<Component> detect_components(const std::vector<TensorInfo>& tensors) {
  detail::KeyIndex k(tensors);
  std::vector<Component> out;
  detail::detect_mmdit(k, out);
  detail::detect_autoencoder(k, out);
  detail::detect_clip(k, out);
  detail::detect_t5(k, out);
  return out;
}

}  // namespace diffuse::io
