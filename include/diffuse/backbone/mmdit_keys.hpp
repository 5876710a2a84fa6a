#pragma once
// Every tensor of an MM-DiT checkpoint, by config (torch-free): its name in the reference
// ("original") layout, its shape, and where it lives in the diffusers layout (SD3_FACTS (b),
// scripts/convert_sd3_to_diffusers.py): renamed, split into q/k/v, or with the (shift, scale)
// halves swapped (norm_out and the last block's context modulation). This is what loaders check a
// file against and what the key-set tests compare, without allocating a model.
#include <cstdint>
#include <string>
#include <vector>

#include "diffuse/backbone/mmdit_config.hpp"

namespace diffuse::backbone {

enum class DiffusersForm { Same, ConcatQKV, SwapHalves };

struct MMDiTKey {
  std::string name;                    // original layout, no prefix
  std::vector<std::int64_t> shape;
  std::vector<std::string> diffusers;  // 1 name, or 3 (q, k, v) for ConcatQKV
  DiffusersForm form = DiffusersForm::Same;
};

inline std::vector<MMDiTKey> mmdit_keys(const MMDiTConfig& c) {
  const std::int64_t d = c.hidden_size(), hd = c.head_dim(), mlp = c.mlp_hidden(), p = c.patch;
  std::vector<MMDiTKey> k;
  auto linear = [&](const std::string& o, const std::string& df, std::int64_t out, std::int64_t in,
                    DiffusersForm form = DiffusersForm::Same) {
    k.push_back({o + ".weight", {out, in}, {df + ".weight"}, form});
    k.push_back({o + ".bias", {out}, {df + ".bias"}, form});
  };
  auto qkv = [&](const std::string& o, const std::string& q, const std::string& kk, const std::string& v) {
    for (const char* wb : {".weight", ".bias"}) {
      MMDiTKey key{o + wb, {}, {q + wb, kk + wb, v + wb}, DiffusersForm::ConcatQKV};
      key.shape = std::string(wb) == ".weight" ? std::vector<std::int64_t>{3 * d, d} : std::vector<std::int64_t>{3 * d};
      k.push_back(key);
    }
  };
  const std::int64_t pp = c.pos_embed_max_size;
  k.push_back({"pos_embed", {1, pp * pp, d}, {"pos_embed.pos_embed"}, DiffusersForm::Same});
  k.push_back({"x_embedder.proj.weight", {d, c.in_channels, p, p}, {"pos_embed.proj.weight"}, DiffusersForm::Same});
  k.push_back({"x_embedder.proj.bias", {d}, {"pos_embed.proj.bias"}, DiffusersForm::Same});
  linear("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1", d, 256);
  linear("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2", d, d);
  linear("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1", d, c.adm_in);
  linear("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2", d, d);
  linear("context_embedder", "context_embedder", d, c.context_in);
  for (int i = 0; i < c.depth; ++i) {
    const std::string o = "joint_blocks." + std::to_string(i) + ".", df = "transformer_blocks." + std::to_string(i) + ".";
    const bool last = i == c.depth - 1, x2 = c.has_x_self_attn(i);
    // context stream
    linear(o + "context_block.adaLN_modulation.1", df + "norm1_context.linear", (last ? 2 : 6) * d, d,
           last ? DiffusersForm::SwapHalves : DiffusersForm::Same);
    qkv(o + "context_block.attn.qkv", df + "attn.add_q_proj", df + "attn.add_k_proj", df + "attn.add_v_proj");
    if (c.qk_norm) {
      k.push_back({o + "context_block.attn.ln_q.weight", {hd}, {df + "attn.norm_added_q.weight"}, DiffusersForm::Same});
      k.push_back({o + "context_block.attn.ln_k.weight", {hd}, {df + "attn.norm_added_k.weight"}, DiffusersForm::Same});
    }
    if (!last) {
      linear(o + "context_block.attn.proj", df + "attn.to_add_out", d, d);
      linear(o + "context_block.mlp.fc1", df + "ff_context.net.0.proj", mlp, d);
      linear(o + "context_block.mlp.fc2", df + "ff_context.net.2", d, mlp);
    }
    // image stream
    linear(o + "x_block.adaLN_modulation.1", df + "norm1.linear", (x2 ? 9 : 6) * d, d);
    qkv(o + "x_block.attn.qkv", df + "attn.to_q", df + "attn.to_k", df + "attn.to_v");
    if (c.qk_norm) {
      k.push_back({o + "x_block.attn.ln_q.weight", {hd}, {df + "attn.norm_q.weight"}, DiffusersForm::Same});
      k.push_back({o + "x_block.attn.ln_k.weight", {hd}, {df + "attn.norm_k.weight"}, DiffusersForm::Same});
    }
    linear(o + "x_block.attn.proj", df + "attn.to_out.0", d, d);
    if (x2) {
      qkv(o + "x_block.attn2.qkv", df + "attn2.to_q", df + "attn2.to_k", df + "attn2.to_v");
      if (c.qk_norm) {
        k.push_back({o + "x_block.attn2.ln_q.weight", {hd}, {df + "attn2.norm_q.weight"}, DiffusersForm::Same});
        k.push_back({o + "x_block.attn2.ln_k.weight", {hd}, {df + "attn2.norm_k.weight"}, DiffusersForm::Same});
      }
      linear(o + "x_block.attn2.proj", df + "attn2.to_out.0", d, d);
    }
    linear(o + "x_block.mlp.fc1", df + "ff.net.0.proj", mlp, d);
    linear(o + "x_block.mlp.fc2", df + "ff.net.2", d, mlp);
  }
  linear("final_layer.adaLN_modulation.1", "norm_out.linear", 2 * d, d, DiffusersForm::SwapHalves);
  linear("final_layer.linear", "proj_out", p * p * c.out_ch(), d);
  return k;
}

inline std::int64_t mmdit_parameter_count(const MMDiTConfig& c, bool include_pos_embed = true) {
  std::int64_t n = 0;
  for (const auto& key : mmdit_keys(c)) {
    if (!include_pos_embed && key.name == "pos_embed") continue;
    std::int64_t e = 1;
    for (auto s : key.shape) e *= s;
    n += e;
  }
  return n;
}

}  // namespace diffuse::backbone
