#pragma once
// LoRA files for the MM-DiT (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"):
// a Linear weight W of (out, in) gains strength * (alpha / r) * up @ down, with down (r, in) and
// up (out, r). Two key layouts are read, the two in which SD3 LoRAs are shared:
//  - diffusers / PEFT: `transformer.transformer_blocks.N.attn.to_q.lora_A.weight` (down) and
//    `.lora_B.weight` (up), module names of the diffusers MM-DiT; an optional `.alpha`, else
//    alpha = r (PEFT's scale 1). to_q / to_k / to_v (add_q_proj / add_k_proj / add_v_proj, attn2's
//    to_q / to_k / to_v) update the row blocks [0, H), [H, 2H), [2H, 3H) of the fused qkv weight;
//    norm_out.linear and the last block's norm1_context.linear hold (scale, shift) where the
//    reference holds (shift, scale), so their updates' halves are swapped.
//  - kohya sd-scripts: `lora_unet_joint_blocks_N_x_block_attn_qkv.lora_down.weight`,
//    `.lora_up.weight` and `.alpha`: the reference's module names with '_' for '.'.
// Every tensor of the file must land: a key that matches no Linear layer of the model, a lone half
// of a pair or a shape that does not fit is an error naming the key (all of them at once).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "diffuse/backbone/mmdit.hpp"
#include "diffuse/backbone/mmdit_keys.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/format.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/nn/linear_weight_layout.hpp"
#include "diffuse/nn/lora.hpp"

namespace diffuse::io {

enum class LoraLayout { Diffusers, Kohya };

// One adapter, resolved to the MM-DiT parameter (reference layout) whose rows it updates.
struct LoraUpdate {
  std::string source;                // the file's module key, for messages
  std::string weight;                // e.g. "joint_blocks.0.x_block.attn.qkv.weight"
  std::int64_t row0 = 0, rows = 0;   // the rows of `weight` it updates
  bool swap_halves = false;          // rows in diffusers' (scale, shift) order
  torch::Tensor down, up;            // (r, in), (rows, r)
  double alpha = 0;

  double scale() const { return alpha / static_cast<double>(down.size(0)); }
  // scale * up @ down in float64, in the reference's row order.
  torch::Tensor delta() const {
    const auto d = up.to(torch::kFloat64).matmul(down.to(torch::kFloat64)) * scale();
    return swap_halves ? swap_row_halves(d) : d;
  }
};

struct LoraFile {
  LoraLayout layout = LoraLayout::Diffusers;
  std::vector<LoraUpdate> updates;
};

namespace lora_detail {

struct Target {
  std::string weight;
  std::int64_t row0 = 0, rows = 0, in = 0;
  bool swap_halves = false;
};

// Module name (diffusers or kohya) -> what it updates, for every 2-D Linear weight of `c`.
inline std::pair<std::map<std::string, Target>, std::map<std::string, Target>> targets(const backbone::MMDiTConfig& c) {
  std::map<std::string, Target> diffusers, kohya;
  for (const auto& k : backbone::mmdit_keys(c)) {
    if (k.shape.size() != 2 || !k.name.ends_with(".weight")) continue;
    const auto module = k.name.substr(0, k.name.size() - 7);
    std::string flat = "lora_unet_" + module;
    for (auto& ch : flat)
      if (ch == '.') ch = '_';
    kohya[flat] = {k.name, 0, k.shape[0], k.shape[1], false};
    const auto parts = static_cast<std::int64_t>(k.diffusers.size());
    for (std::int64_t i = 0; i < parts; ++i) {
      const auto& d = k.diffusers[static_cast<std::size_t>(i)];
      const auto rows = k.shape[0] / parts;
      diffusers[d.substr(0, d.size() - 7)] = {k.name, i * rows, rows, k.shape[1],
                                             k.form == backbone::DiffusersForm::SwapHalves};
    }
  }
  return {diffusers, kohya};
}

// "<module>.<suffix>" -> (module, part): part "down", "up" or "alpha"; empty part: not a LoRA key.
inline std::pair<std::string, std::string> split_key(const std::string& key) {
  static const std::pair<const char*, const char*> suffixes[] = {
      {".lora_A.weight", "down"}, {".lora_B.weight", "up"},   {".lora_down.weight", "down"},
      {".lora_up.weight", "up"},  {".lora.down.weight", "down"}, {".lora.up.weight", "up"},
      {".alpha", "alpha"}};
  for (const auto& [suffix, part] : suffixes)
    if (key.ends_with(suffix)) return {key.substr(0, key.size() - std::string(suffix).size()), part};
  return {key, ""};
}

}  // namespace lora_detail

// Reads a LoRA file for an MM-DiT of config `c`; throws InputError listing every key that does not
// fit.
inline LoraFile read_lora(const std::string& path, const backbone::MMDiTConfig& c) {
  const SafetensorsFile file(path);
  const auto [by_diffusers, by_kohya] = lora_detail::targets(c);
  struct Parts {
    std::string down, up, alpha;
  };
  std::map<std::string, Parts> modules;
  std::vector<std::string> problems;
  for (const auto& t : file.tensors()) {
    const auto [module, part] = lora_detail::split_key(t.name);
    if (part.empty()) problems.push_back(t.name + ": not a LoRA tensor (expected lora_A/lora_B, lora_down/lora_up or alpha)");
    else if (part == "down") modules[module].down = t.name;
    else if (part == "up") modules[module].up = t.name;
    else modules[module].alpha = t.name;
  }
  if (modules.empty() && problems.empty()) problems.push_back("no LoRA tensors");
  LoraFile out;
  bool kohya = false, diffusers = false;
  for (const auto& [module, p] : modules) {
    const bool is_kohya = module.starts_with("lora_unet_");
    const std::string name = !is_kohya && module.starts_with("transformer.") ? module.substr(12) : module;
    const auto& table = is_kohya ? by_kohya : by_diffusers;
    const auto it = table.find(name);
    if (it == table.end()) {
      problems.push_back(module + ": matches no Linear layer of this MM-DiT (depth " + std::to_string(c.depth) + ")");
      continue;
    }
    if (p.down.empty() || p.up.empty()) {
      problems.push_back(module + ": has " + (p.down.empty() ? "no down (lora_A / lora_down)" : "no up (lora_B / lora_up)") +
                         " weight");
      continue;
    }
    (is_kohya ? kohya : diffusers) = true;
    const auto& target = it->second;
    const auto down = load_tensor(file, p.down, {torch::kFloat32});
    const auto up = load_tensor(file, p.up, {torch::kFloat32});
    const auto shape = [](const torch::Tensor& x) { return x.sizes().vec(); };
    if (down.dim() != 2 || up.dim() != 2 || down.size(1) != target.in || up.size(0) != target.rows ||
        up.size(1) != down.size(0) || down.size(0) < 1) {
      problems.push_back(module + ": down " + format_shape(shape(down)) + " and up " + format_shape(shape(up)) +
                         " do not fit " + target.weight + " (expected down [r, " + std::to_string(target.in) +
                         "] and up [" + std::to_string(target.rows) + ", r])");
      continue;
    }
    double alpha = static_cast<double>(down.size(0));  // none stored: PEFT's scale 1
    if (!p.alpha.empty()) {
      const auto a = load_tensor(file, p.alpha, {torch::kFloat64});
      if (a.numel() != 1 || !std::isfinite(a.item<double>())) {
        problems.push_back(p.alpha + ": alpha must be one finite number");
        continue;
      }
      alpha = a.item<double>();
    }
    out.updates.push_back({module, target.weight, target.row0, target.rows, !is_kohya && target.swap_halves, down, up, alpha});
  }
  if (kohya && diffusers) problems.push_back("mixes the kohya (lora_unet_...) and diffusers key layouts");
  throw_if_problems(path, "LoRA does not fit the MM-DiT", problems);
  out.layout = kohya ? LoraLayout::Kohya : LoraLayout::Diffusers;
  return out;
}

// Writes `lora` for an MM-DiT of config `c` in `layout`, converting where the layouts differ: a
// weight updated in pieces (diffusers' q, k and v of a fused qkv) becomes one kohya pair of their
// summed rank (downs stacked, ups placed block by block, each piece's alpha / r folded into its up,
// alpha = rank), a fused-qkv pair becomes three diffusers pairs (its up split by rows, the same
// down and alpha), and (scale, shift) halves are swapped to the layout's order. A pair that maps
// one to one keeps its rank, alpha and values. diffusers files carry `format: pt` and an `.alpha`
// per module where alpha differs from the rank.
inline void save_lora(const std::filesystem::path& path, const LoraFile& lora, LoraLayout layout,
                      const backbone::MMDiTConfig& c) {
  const auto [by_diffusers, by_kohya] = lora_detail::targets(c);
  // Each update's up in the reference's row order (the file's (scale, shift) halves swapped back).
  auto reference_up = [](const LoraUpdate& u) { return u.swap_halves ? swap_row_halves(u.up) : u.up; };
  struct Slot {  // one module of the output layout: the weight rows it covers
    std::string module;
    lora_detail::Target target;
  };
  std::vector<Slot> slots;
  std::set<std::string> weights;
  for (const auto& [module, target] : layout == LoraLayout::Kohya ? by_kohya : by_diffusers) {
    slots.push_back({module, target});
    weights.insert(target.weight);
  }
  for (const auto& u : lora.updates)  // it is, where the LoRA was read for this config
    if (!weights.count(u.weight)) throw InputError(u.source + ": " + u.weight + " is not a Linear weight of this MM-DiT");
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& slot : slots) {
    const auto& t = slot.target;
    struct Piece {
      const LoraUpdate* u;
      std::int64_t lo, hi;  // rows of the weight, within the slot
    };
    std::vector<Piece> pieces;
    for (const auto& u : lora.updates) {
      if (u.weight != t.weight) continue;
      const auto lo = std::max(u.row0, t.row0), hi = std::min(u.row0 + u.rows, t.row0 + t.rows);
      if (lo < hi) pieces.push_back({&u, lo, hi});
    }
    if (pieces.empty()) continue;
    // This layout's row order for the slot: diffusers' (scale, shift) where the slot swaps halves.
    auto to_layout_order = [&](const torch::Tensor& up) { return t.swap_halves ? swap_row_halves(up) : up; };
    torch::Tensor down, up;
    double alpha = 0;
    const auto& first = *pieces[0].u;
    if (pieces.size() == 1 && first.row0 == t.row0 && first.rows == t.rows) {
      down = first.down, up = to_layout_order(reference_up(first)), alpha = first.alpha;
    } else {
      std::int64_t rank = 0;
      for (const auto& p : pieces) rank += p.u->down.size(0);
      down = torch::zeros({rank, t.in}, torch::kFloat32);
      auto up_ref = torch::zeros({t.rows, rank}, torch::kFloat32);
      std::int64_t col = 0;
      for (const auto& p : pieces) {
        const auto r = p.u->down.size(0);
        down.narrow(0, col, r).copy_(p.u->down);
        up_ref.narrow(0, p.lo - t.row0, p.hi - p.lo)
            .narrow(1, col, r)
            .copy_(reference_up(*p.u).narrow(0, p.lo - p.u->row0, p.hi - p.lo) * p.u->scale());
        col += r;
      }
      up = to_layout_order(up_ref), alpha = static_cast<double>(rank);
    }
    if (layout == LoraLayout::Kohya) {
      out.emplace_back(slot.module + ".lora_down.weight", down);
      out.emplace_back(slot.module + ".lora_up.weight", up);
      out.emplace_back(slot.module + ".alpha", torch::tensor(static_cast<float>(alpha)));
    } else {
      const auto m = "transformer." + slot.module;
      out.emplace_back(m + ".lora_A.weight", down);
      out.emplace_back(m + ".lora_B.weight", up);
      if (alpha != static_cast<double>(down.size(0))) out.emplace_back(m + ".alpha", torch::tensor(static_cast<float>(alpha)));
    }
  }
  const std::map<std::string, std::string> metadata =
      layout == LoraLayout::Kohya ? std::map<std::string, std::string>{{"ss_network_module", "networks.lora"}}
                                  : std::map<std::string, std::string>{{"format", "pt"}};
  save_safetensors(path, out, metadata);
}

// The adapters attached to `model` (nn/lora.hpp) as a LoraFile, for save_lora: for an MM-DiT
// their names are the reference's module names. The adapters' strength is not part of the file.
inline LoraFile lora_file_of(torch::nn::Module& model) {
  LoraFile out;
  for (const auto& [name, a] : nn::lora_adapters(model))
    out.updates.push_back({name, name + ".weight", 0, a->up.size(0), false, a->down.detach().clone(), a->up.detach().clone(),
                           a->alpha()});
  return out;
}

// Adds strength * each update to the model's weights (in float64, stored in the weight's dtype),
// keeping each weight's memory layout (nn/linear_weight_layout.hpp). The weights get memory of
// their own: a weight that was a view of a memory-mapped file is not written through.
inline void merge_lora(backbone::MMDiT& model, const LoraFile& lora, double strength) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : model->named_parameters(true)) params.emplace(p.key(), p.value());
  std::map<std::string, torch::Tensor> merged;
  for (const auto& u : lora.updates) {
    const auto it = params.find(u.weight);
    if (it == params.end()) throw InputError(u.source + ": the model has no " + u.weight);
    auto& m = merged[u.weight];
    if (!m.defined()) m = it->second.to(torch::kFloat64);
    m.narrow(0, u.row0, u.rows).add_(u.delta().to(m.device()), strength);
  }
  for (auto& [name, m] : merged) nn::replace_weight_values(params.at(name), m);
}

}  // namespace diffuse::io
