#pragma once
// A ControlNet written by a test as the released files store it: blocks in the reference's names,
// the timestep / text embedders and the patch embedding in diffusers' names, a control_type tensor.
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffuse/backbone/controlnet.hpp"
#include "diffuse/io/safetensors.hpp"

namespace diffuse::test {

// Random weights that make every part matter (N(0, 0.02) for the zero-initialised output maps).
inline void randomize_controlnet(backbone::ControlNet& net, std::uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : net->named_parameters(true)) {
    if (p.value().dim() >= 2) p.value().normal_(0, 1.0 / std::sqrt(static_cast<double>(p.value()[0].numel())));
    else p.value().normal_(0, 0.1);
  }
}

inline std::string released_name(const std::string& n) {
  const std::vector<std::pair<std::string, std::string>> renames{
      {"t_embedder.mlp.0.", "time_text_embed.timestep_embedder.linear_1."},
      {"t_embedder.mlp.2.", "time_text_embed.timestep_embedder.linear_2."},
      {"y_embedder.mlp.0.", "time_text_embed.text_embedder.linear_1."},
      {"y_embedder.mlp.2.", "time_text_embed.text_embedder.linear_2."},
      {"x_embedder.proj.", "pos_embed.proj."}};
  for (const auto& [from, to] : renames)
    if (n.starts_with(from)) return to + n.substr(from.size());
  return n;
}

inline void write_controlnet(const std::filesystem::path& path, backbone::ControlNet& net, std::optional<int> control_type = {}) {
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  for (const auto& p : net->named_parameters(true)) ts.emplace_back(released_name(p.key()), p.value().detach().contiguous());
  if (control_type) ts.emplace_back("control_type", torch::tensor({*control_type}, torch::kInt32));
  io::save_safetensors(path, ts);
}

}  // namespace diffuse::test
