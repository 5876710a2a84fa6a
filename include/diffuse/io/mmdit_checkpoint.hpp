#pragma once
// Loading and saving MM-DiT weights in the layouts the released checkpoints use: the reference's
// single-file layout (with or without the `model.diffusion_model.` prefix) and the diffusers
// layout (split q/k/v, renamed modules, (shift, scale) halves swapped in norm_out and in the last
// block's context modulation). A file is checked against the full key list of its config first;
// missing, unexpected and mis-shaped tensors are reported together, by name, with shapes.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "diffuse/backbone/mmdit.hpp"
#include "diffuse/backbone/mmdit_keys.hpp"
#include "diffuse/core/format.hpp"
#include "diffuse/io/model_family.hpp"
#include "diffuse/io/module_weights.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/nn/linear_weight_layout.hpp"

namespace diffuse::io {

struct MMDiTLoadOptions {
  std::optional<torch::ScalarType> dtype;            // compute dtype; empty keeps the file's
  torch::Device device = torch::kCPU;
  std::optional<backbone::MMDiTConfig> config;       // empty: detected from the shapes
  // Weights already in the compute dtype are read into memory of the process (LoadOptions::in_memory:
  // the first step then runs as fast as the later ones); false keeps them views of the file, which
  // processes loading the same file share through the page cache.
  bool in_memory = true;
  // Where the Linear weights lie in memory (nn/linear_weight_layout.hpp). As stored (row-major)
  // keeps them as read; column-major copies them and makes a float32 CPU forward faster
  // (SD3-medium at 256²: up to 12% or 25% on the two machine kinds measured, docs/performance.md).
  // Empty: column-major for float32 on an AVX-512 CPU, as stored otherwise
  // (nn::preferred_weight_layout).
  std::optional<nn::WeightLayout> weight_layout;
};

namespace mmdit_detail {

inline const Component& find_mmdit(const std::vector<Component>& cs, const std::string& path) {
  const Component* found = nullptr;
  for (const auto& c : cs)
    if (c.kind == ComponentKind::MMDiT) {
      if (found) throw InputError(path + ": holds more than one MM-DiT");
      found = &c;
    }
  if (!found) throw InputError(path + ": no MM-DiT weights found (expected x_embedder.proj.weight or pos_embed.proj.weight)");
  return *found;
}

}  // namespace mmdit_detail

// The two halves of t's rows exchanged: diffusers' (scale, shift) <-> the reference's (shift, scale)
// (backbone::DiffusersForm::SwapHalves).
inline torch::Tensor swap_row_halves(const torch::Tensor& t) {
  const auto h = t.chunk(2, 0);
  return torch::cat({h[1], h[0]}, 0);
}

// The file's MM-DiT tensors in the original layout (no prefix), validated against `config`.
inline std::vector<std::pair<std::string, torch::Tensor>> read_mmdit_tensors(const SafetensorsFile& file,
                                                                             const backbone::MMDiTConfig& config,
                                                                             const LoadOptions& opt = {}) {
  const auto components = detect_components(file.tensors());
  const auto& comp = mmdit_detail::find_mmdit(components, file.path());
  const bool diffusers = comp.layout == KeyLayout::Diffusers;
  const std::string& prefix = comp.prefix;
  std::vector<std::string> problems;
  std::set<std::string> used;
  const auto keys = backbone::mmdit_keys(config);
  for (const auto& k : keys) {
    const auto sources = diffusers ? k.diffusers : std::vector<std::string>{k.name};
    std::vector<std::int64_t> found;
    bool ok = true;
    for (const auto& src : sources) {
      const auto* info = file.header().find(prefix + src);
      if (!info) {
        problems.push_back("missing " + prefix + src + " (expected " + format_shape(k.shape) + ")");
        ok = false;
        continue;
      }
      used.insert(info->name);
      if (found.empty()) found = info->shape;
      else found[0] += info->shape.empty() ? 0 : info->shape[0];  // q, k, v stack on rows
    }
    if (ok && found != k.shape)
      problems.push_back("shape of " + prefix + (diffusers ? sources[0] : k.name) + ": expected " +
                         format_shape(k.shape) + (sources.size() > 1 ? " (q, k, v together)" : "") +
                         ", found " + format_shape(found));
  }
  for (const auto& t : file.tensors())
    if (t.name.starts_with(prefix) && !used.count(t.name)) {
      // In an all-in-one file other components live under other prefixes; with an empty prefix
      // every tensor is ours.
      bool other = false;
      for (const auto& c : components)
        if (c.kind != ComponentKind::MMDiT && !c.prefix.empty() && t.name.starts_with(c.prefix)) other = true;
      if (!other) problems.push_back("unexpected " + t.name);
    }
  throw_if_problems(file.path(), "MM-DiT weights do not match the config", problems);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    if (!diffusers) {
      out.emplace_back(k.name, load_tensor(file, prefix + k.name, opt));
      continue;
    }
    std::vector<torch::Tensor> parts;
    for (const auto& src : k.diffusers) parts.push_back(load_tensor(file, prefix + src, opt));
    torch::Tensor t = parts[0];
    if (k.form == backbone::DiffusersForm::ConcatQKV) t = torch::cat(parts, 0);
    if (k.form == backbone::DiffusersForm::SwapHalves) t = swap_row_halves(t);  // diffusers (scale, shift) -> reference
    out.emplace_back(k.name, t);
  }
  return out;
}

// Builds an MM-DiT from a checkpoint of either layout. Tensors already in the compute dtype are read
// into memory, or stay views of the memory-mapped file with `in_memory = false` (no second copy).
inline backbone::MMDiT load_mmdit(const std::string& path, const MMDiTLoadOptions& opt = {}) {
  SafetensorsFile file(path);
  const auto config = opt.config ? *opt.config : backbone::detect_mmdit_config(file.tensors(), path);
  LoadOptions lo;
  lo.dtype = opt.dtype;
  lo.device = opt.device;
  lo.in_memory = opt.in_memory;
  auto tensors = read_mmdit_tensors(file, config, lo);
  // Constructed in the loaded dtype: the file's tensors replace every parameter (construct_for_loading).
  const auto loaded = tensors.empty() ? torch::kFloat32 : tensors.front().second.scalar_type();
  auto model = construct_for_loading(loaded, [&] { return backbone::MMDiT(config, /*init_pos_embed=*/false); });
  torch::NoGradGuard no_grad;
  auto params = model->named_parameters(true);
  auto buffers = model->named_buffers(true);
  for (auto& [name, t] : tensors) {
    if (auto* p = params.find(name)) p->set_data(t);
    else if (auto* b = buffers.find(name)) b->set_data(t);
    else throw Error("MM-DiT: no module slot for " + name + " (library bug: key list and modules disagree)");
  }
  tensors.clear();  // the module holds them now: a layout change below must not leave a second copy alive
  // as stored moves nothing; column-major copies each Linear weight once
  const auto dtype = model->x_embedder->proj->weight.scalar_type();
  nn::set_linear_weight_layout(*model, opt.weight_layout.value_or(nn::preferred_weight_layout(dtype, opt.device)));
  return model;
}

// The model's tensors in the chosen layout (prefix prepended), e.g. for save_safetensors.
inline std::vector<std::pair<std::string, torch::Tensor>> mmdit_tensors(backbone::MMDiT& model, KeyLayout layout,
                                                                        const std::string& prefix = "") {
  auto params = model->named_parameters(true);
  auto buffers = model->named_buffers(true);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& k : backbone::mmdit_keys(model->config())) {
    const auto* p = params.find(k.name);
    const torch::Tensor t = p ? *p : *buffers.find(k.name);
    if (layout == KeyLayout::Original) {
      out.emplace_back(prefix + k.name, t);
    } else if (k.form == backbone::DiffusersForm::ConcatQKV) {
      const auto parts = t.chunk(3, 0);
      for (int i = 0; i < 3; ++i) out.emplace_back(prefix + k.diffusers[i], parts[i]);
    } else if (k.form == backbone::DiffusersForm::SwapHalves) {
      out.emplace_back(prefix + k.diffusers[0], swap_row_halves(t));
    } else {
      out.emplace_back(prefix + k.diffusers[0], t);
    }
  }
  return out;
}

inline void save_mmdit(const std::filesystem::path& path, backbone::MMDiT& model, KeyLayout layout,
                       const std::string& prefix = "", std::map<std::string, std::string> metadata = {}) {
  metadata.emplace("diffuse.mmdit_config", config_to_json(model->config()).dump());
  save_safetensors(path, mmdit_tensors(model, layout, prefix), metadata);
}

}  // namespace diffuse::io
