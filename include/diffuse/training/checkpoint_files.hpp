#pragma once
// The files a training run writes: small text files written atomically (configs, state.json), and
// a module's parameters and buffers by name, saved to and loaded from safetensors.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "diffuse/io/atomic_file.hpp"
#include "diffuse/io/safetensors.hpp"

namespace diffuse::training::trainer_detail {

inline void write_text(const std::filesystem::path& p, const std::string& s) {
  io::AtomicFileWriter w(p);
  w.write(s.data(), s.size());
  w.commit();
}

inline std::vector<std::pair<std::string, torch::Tensor>> named(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters(true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers(true)) out.emplace_back(b.key(), b.value());
  return out;
}

inline void load_into(torch::nn::Module& m, const std::filesystem::path& file) {
  io::SafetensorsFile f(file.string());
  torch::NoGradGuard g;
  for (auto& [name, t] : named(m)) t.copy_(io::load_tensor(f, name, {t.scalar_type()}));
}

}  // namespace diffuse::training::trainer_detail
