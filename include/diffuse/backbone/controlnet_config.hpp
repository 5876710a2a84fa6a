#pragma once
// The SD3 ControlNet's configuration read from a file's tensors (torch-free), as the SD3.5 reference
// reads it (sd3_impls.py BaseModel, sd3_infer.py SD3; the module is dit_embedder.py's
// ControlNetEmbedder): a stack of single-stream transformer blocks the MM-DiT's width, each followed
// by a zero-initialised linear map whose output is added to the MM-DiT's image tokens.
//
// Released files (stabilityai/stable-diffusion-3.5-controlnets: sd3.5_large_controlnet_{blur,canny,
// depth}) store the blocks in the reference's names (transformer_blocks.N.{adaLN_modulation.1,
// attn.qkv, attn.proj, mlp.fc1, mlp.fc2}, controlnet_blocks.N, pos_embed_input.proj) and the
// embedders in diffusers' (time_text_embed.{timestep,text}_embedder.linear_{1,2}, pos_embed.proj),
// which the reference renames on load (CONTROLNET_MAP); a `control_type` int32 tensor, when
// present, says which preprocessing the control image gets (0 blur, 1 canny, 2 depth).
//
// Two forms, told apart by the width of the pooled-text input:
//  - the 8B form (the SD3.5-large ControlNets): the pooled text itself (the MM-DiT's y, 2048
//    wide); the input tokens are the MM-DiT's own patch embedding plus its position table, and the
//    blocks run in sequence;
//  - the 2B form: the MM-DiT's embedded pooled text (its y_embedder's output, the hidden width); the
//    ControlNet's own patch embedding without positions, and every block reads the same input.
// The reference tells them apart by the literal 2048 (SD3's pooled width); comparing with the
// model's pooled width is the same test for every released model and also holds for small ones.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "diffuse/backbone/mmdit_config.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/io/safetensors_file.hpp"

namespace diffuse::backbone {

enum class ControlNetForm { PooledText8B, EmbeddedText2B };

struct ControlNetConfig {
  int layers = 0;      // transformer blocks (released: 19)
  int hidden = 0;      // = the MM-DiT's hidden width
  int heads = 0;       // = the MM-DiT's heads (the reference: its depth)
  int mlp_hidden = 0;  // the blocks' MLP width
  int patch = 2, in_channels = 16;
  int pooled_in = 0;   // y_embedder's input width
  ControlNetForm form = ControlNetForm::PooledText8B;
  bool own_patch_embed = false;  // the file has pos_embed.proj / x_embedder.proj (used by the 2B form)
  int control_type = 0;          // 0 blur, 1 canny, 2 depth (dit_embedder.py)
  bool control_type_stored = false;
  int interval = 1;  // joint block i receives ControlNet block i / interval (depth / layers)
};

inline const char* control_type_name(int t) { return t == 0 ? "blur" : t == 1 ? "canny" : t == 2 ? "depth" : "unknown"; }

namespace controlnet_detail {

inline const io::TensorInfo* find_any(const io::SafetensorsFile& f, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (const auto* t = f.header().find(n)) return t;
  return nullptr;
}

}  // namespace controlnet_detail

// Reads a ControlNet file's configuration and checks it against the MM-DiT it is to drive; a file
// that is no SD3 ControlNet, or one made for a model of other sizes, is an InputError saying why.
inline ControlNetConfig detect_controlnet_config(const io::SafetensorsFile& f, const MMDiTConfig& base) {
  using controlnet_detail::find_any;
  const std::string where = f.path();
  auto fail = [&](const std::string& m) { throw InputError(where + ": " + m); };
  auto need = [&](std::initializer_list<const char*> names, std::size_t dims) -> const io::TensorInfo& {
    const auto* t = find_any(f, names);
    if (!t) fail(std::string("not an SD3 ControlNet: no ") + *names.begin() + " (see `diffuse inspect`)");
    if (t->shape.size() != dims) fail(t->name + " has " + std::to_string(t->shape.size()) + " dimensions, expected " + std::to_string(dims));
    return *t;
  };
  ControlNetConfig c;
  std::set<int> blocks;
  for (const auto& t : f.tensors()) {
    const std::string head = "transformer_blocks.", tail = ".attn.proj.weight";
    if (t.name.starts_with(head) && t.name.ends_with(tail) && t.name.size() > head.size() + tail.size()) {
      const auto idx = t.name.substr(head.size(), t.name.size() - head.size() - tail.size());
      if (std::all_of(idx.begin(), idx.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) blocks.insert(std::stoi(idx));
    }
  }
  if (blocks.empty()) fail("not an SD3 ControlNet: no transformer_blocks.N.attn.proj.weight (see `diffuse inspect`)");
  c.layers = static_cast<int>(blocks.size());
  if (*blocks.rbegin() != c.layers - 1) fail("transformer blocks are not numbered 0.." + std::to_string(c.layers - 1));
  c.hidden = static_cast<int>(need({"controlnet_blocks.0.weight"}, 2).shape[0]);
  const auto& input = need({"pos_embed_input.proj.weight"}, 4);
  c.in_channels = static_cast<int>(input.shape[1]);
  c.patch = static_cast<int>(input.shape[2]);
  c.pooled_in = static_cast<int>(need({"time_text_embed.text_embedder.linear_1.weight", "y_embedder.mlp.0.weight"}, 2).shape[1]);
  c.mlp_hidden = static_cast<int>(need({"transformer_blocks.0.mlp.fc1.weight"}, 2).shape[0]);
  c.own_patch_embed = find_any(f, {"pos_embed.proj.weight", "x_embedder.proj.weight"}) != nullptr;
  if (const auto* t = f.header().find("control_type")) {
    std::int64_t v = 0;
    const auto bytes = f.bytes(*t);
    if (t->dtype == io::Dtype::I32 && bytes.size() >= 4) {
      std::int32_t i32;
      std::memcpy(&i32, bytes.data(), 4);
      v = i32;
    } else if (t->dtype == io::Dtype::I64 && bytes.size() >= 8) {
      std::memcpy(&v, bytes.data(), 8);
    } else {
      fail("control_type must be one int32 or int64, found " + std::string(io::dtype_name(t->dtype)));
    }
    c.control_type = static_cast<int>(v);
    c.control_type_stored = true;
  }
  // Against the MM-DiT: the blocks' outputs are added to its tokens.
  const int d = base.hidden_size();
  const std::string other = "a ControlNet for another model: ";
  if (c.hidden != d)
    fail(other + "its blocks are " + std::to_string(c.hidden) + " wide, the MM-DiT's " + std::to_string(d) +
         " (the released ControlNets are for SD3.5-large, 2432)");
  if (c.patch != base.patch || c.in_channels != base.in_channels)
    fail(other + "its control input is patch " + std::to_string(c.patch) + " of " + std::to_string(c.in_channels) +
         " channels, the MM-DiT's patch " + std::to_string(base.patch) + " of " + std::to_string(base.in_channels));
  if (c.pooled_in == base.adm_in) {
    c.form = ControlNetForm::PooledText8B;
  } else if (c.pooled_in == d) {
    c.form = ControlNetForm::EmbeddedText2B;
    if (!c.own_patch_embed) fail("a 2B-form ControlNet (pooled input " + std::to_string(d) + " wide) needs its own patch embedding: no pos_embed.proj.weight");
  } else {
    fail(other + "its pooled-text input is " + std::to_string(c.pooled_in) + " wide; the MM-DiT's pooled text is " +
         std::to_string(base.adm_in) + " and its embedding " + std::to_string(d));
  }
  c.heads = base.num_heads();
  // The reference adds ControlNet block i / (depth / layers) after joint block i; that index must exist.
  c.interval = residual_interval(base.depth, c.layers);
  if (c.interval == 0)
    fail(other + std::to_string(c.layers) + " blocks cannot feed " + std::to_string(base.depth) +
         " joint blocks (block i takes ControlNet output i / (depth / layers), as the reference)");
  return c;
}

// The reference's preprocessing of the control image: x 255 x 0.5 + 0.5 for the 8B canny
// ControlNet (sd3_infer.py vae_encode, control_type 1), 2x - 1 for every other.
inline bool uses_canny_scaling(const ControlNetConfig& c) {
  return c.form == ControlNetForm::PooledText8B && c.control_type == 1;
}

}  // namespace diffuse::backbone
