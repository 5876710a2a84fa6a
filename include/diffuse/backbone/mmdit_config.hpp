#pragma once
// MM-DiT configuration (torch-free): sizes, named presets, and detection from a checkpoint's
// tensor shapes (the reference's rules, SD3_FACTS (b)). A plain struct reflected with Boost.Hana,
// so it reads and writes JSON (`--config C.json`).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "diffuse/core/config.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/io/model_family.hpp"

namespace diffuse::backbone {

struct MMDiTConfig {
  BOOST_HANA_DEFINE_STRUCT(MMDiTConfig,
                           (int, depth),               // joint blocks; the paper's scaling parameter d
                           (int, hidden),              // 0: 64 * depth
                           (int, heads),               // 0: depth (head size 64)
                           (int, patch),               // patch size p
                           (int, in_channels),         // latent channels
                           (int, out_channels),        // 0: in_channels
                           (int, adm_in),              // pooled text vector y (2048 in SD3)
                           (int, context_in),          // token conditioning width (4096 in SD3)
                           (int, pos_embed_max_size),  // P: the stored P x P position table
                           (double, mlp_ratio),        // MLP hidden = mlp_ratio * hidden
                           (bool, qk_norm),            // per-head RMSNorm of q and k (SD3.5)
                           (std::vector<int>, x_self_attn_layers));  // MMDiT-X blocks (SD3.5-medium: 0..12)

  int hidden_size() const { return hidden > 0 ? hidden : 64 * depth; }
  int num_heads() const { return heads > 0 ? heads : depth; }
  int head_dim() const { return hidden_size() / num_heads(); }
  int out_ch() const { return out_channels > 0 ? out_channels : in_channels; }
  int mlp_hidden() const { return static_cast<int>(hidden_size() * mlp_ratio); }
  bool has_x_self_attn(int block) const {
    return std::find(x_self_attn_layers.begin(), x_self_attn_layers.end(), block) != x_self_attn_layers.end();
  }
  void validate() const {
    auto bad = [](const std::string& m) { throw InputError("MM-DiT config: " + m); };
    if (depth < 1) bad("depth must be at least 1");
    if (hidden_size() % num_heads()) bad("hidden " + std::to_string(hidden_size()) + " is not divisible by heads");
    if (patch < 1 || in_channels < 1 || adm_in < 1 || context_in < 1 || pos_embed_max_size < 1 || mlp_ratio <= 0)
      bad("patch, in_channels, adm_in, context_in, pos_embed_max_size and mlp_ratio must be positive");
    for (int l : x_self_attn_layers)
      if (l < 0 || l >= depth) bad("x_self_attn_layers holds " + std::to_string(l) + ", outside 0.." + std::to_string(depth - 1));
  }

  // The paper's scaling family: hidden = 64 d, heads = d, SD3's conditioning sizes.
  static MMDiTConfig scaling(int d) { return {d, 0, 0, 2, 16, 0, 2048, 4096, 192, 4.0, false, {}}; }
  static MMDiTConfig sd3_medium() { return scaling(24); }
  static MMDiTConfig sd35_medium() {
    auto c = scaling(24);
    c.pos_embed_max_size = 384;
    c.qk_norm = true;
    for (int i = 0; i <= 12; ++i) c.x_self_attn_layers.push_back(i);
    return c;
  }
  static MMDiTConfig sd35_large() {
    auto c = scaling(38);
    c.qk_norm = true;
    return c;
  }
};

// Joint blocks per ControlNet residual when n residuals feed `depth` blocks (block i takes residual
// i / (depth / n), as the SD3.5 reference adds them); 0 when n cannot feed depth that way.
inline int residual_interval(int depth, int n) {
  if (n < 1 || n > depth) return 0;
  const int interval = depth / n;
  return (depth - 1) / interval < n ? interval : 0;
}

// Reads the configuration from a checkpoint's shapes; `prefix` is where the MM-DiT keys live
// ("model.diffusion_model." in all-in-one files). Original and diffusers layouts.
inline MMDiTConfig detect_mmdit_config(const std::vector<io::TensorInfo>& tensors, const std::string& where) {
  std::vector<io::Component> found;
  for (auto& c : io::detect_components(tensors))
    if (c.kind == io::ComponentKind::MMDiT) found.push_back(c);
  if (found.empty()) throw InputError(where + ": no MM-DiT weights found (no x_embedder.proj.weight or pos_embed.proj.weight)");
  if (found.size() > 1) throw InputError(where + ": several MM-DiT weight sets found; pass the prefix explicitly");
  const auto& s = found[0].sizes;
  MMDiTConfig c{};
  c.depth = static_cast<int>(s.at("depth"));
  c.hidden = static_cast<int>(s.at("hidden"));
  c.heads = c.hidden / 64;  // head size 64 in every SD3 model (the reference derives heads = depth the same way)
  c.patch = static_cast<int>(s.at("patch"));
  c.in_channels = static_cast<int>(s.at("in_channels"));
  c.adm_in = static_cast<int>(s.at("adm_in"));
  c.context_in = static_cast<int>(s.at("context_in"));
  c.pos_embed_max_size = static_cast<int>(s.at("pos_embed_max_size"));
  c.mlp_ratio = 4.0;
  c.qk_norm = s.at("qk_norm") != 0;
  const bool diffusers = found[0].layout == io::KeyLayout::Diffusers;
  const std::string p = found[0].prefix;
  for (int i = 0; i < c.depth; ++i) {
    const std::string key = diffusers ? p + "transformer_blocks." + std::to_string(i) + ".attn2.to_q.weight"
                                      : p + "joint_blocks." + std::to_string(i) + ".x_block.attn2.qkv.weight";
    if (std::any_of(tensors.begin(), tensors.end(), [&](const io::TensorInfo& t) { return t.name == key; }))
      c.x_self_attn_layers.push_back(i);
  }
  // MLP width from fc1 when present.
  const std::string fc1 = diffusers ? p + "transformer_blocks.0.ff.net.0.proj.weight" : p + "joint_blocks.0.x_block.mlp.fc1.weight";
  for (const auto& t : tensors)
    if (t.name == fc1 && !t.shape.empty() && c.hidden > 0) c.mlp_ratio = static_cast<double>(t.shape[0]) / c.hidden;
  if (c.depth < 1 || c.hidden < 64 || c.adm_in < 1 || c.context_in < 1 || c.pos_embed_max_size < 1)
    throw InputError(where + ": MM-DiT weights are incomplete (missing y_embedder, context_embedder or pos_embed)");
  return c;
}

}  // namespace diffuse::backbone
