#pragma once
// What a LoRA-training run (training/lora_trainer.hpp, training/dpo_trainer.hpp) writes and reads
// back: the adapters as LoRA files in both layouts (diffusers / PEFT and kohya, io/lora_file.hpp)
// and its resumable state in DIR/state/ (adapters.safetensors, optimizer.safetensors, and
// state.json with the step and elapsed time, written last).
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "diffuse/backbone/mmdit.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/io/lora_file.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/nn/lora.hpp"
#include "diffuse/training/checkpoint_files.hpp"
#include "diffuse/training/flat_adamw.hpp"

namespace diffuse::training {

using NamedAdapters = std::vector<std::pair<std::string, nn::LoraAdapter>>;

struct AdapterRunState {
  int step = 0;
  double elapsed_seconds = 0;
};

// Writes DIR/lora.safetensors, DIR/lora_kohya.safetensors and DIR/state/.
inline void save_adapter_run(const std::filesystem::path& dir, backbone::MMDiT& model, const NamedAdapters& adapters,
                             const FlatAdamW& opt, const AdapterRunState& st) {
  std::filesystem::create_directories(dir / "state");
  const auto lora = io::lora_file_of(*model);
  const std::map<std::string, std::string> meta{{"diffuse.step", std::to_string(st.step)}};
  io::save_lora(dir / "lora.safetensors", lora, io::LoraLayout::Diffusers, model->config());
  io::save_lora(dir / "lora_kohya.safetensors", lora, io::LoraLayout::Kohya, model->config());
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [name, a] : adapters) tensors.emplace_back(name + ".down", a->down), tensors.emplace_back(name + ".up", a->up);
  io::save_safetensors(dir / "state" / "adapters.safetensors", tensors, meta);
  io::save_safetensors(dir / "state" / "optimizer.safetensors", opt.state(), meta);
  trainer_detail::write_text(dir / "state" / "state.json",
                             nlohmann::json{{"step", st.step}, {"elapsed_seconds", st.elapsed_seconds}}.dump(2) + "\n");
}

// Reads DIR/state/ into the adapters and the optimizer; `what` names the run kind in errors.
inline AdapterRunState restore_adapter_run(const std::filesystem::path& dir, NamedAdapters& adapters, FlatAdamW& opt,
                                           const std::string& what) {
  const auto st_file = dir / "state" / "state.json";
  std::ifstream in(st_file);
  const auto st = nlohmann::json::parse(in, nullptr, false);
  if (st.is_discarded() || !st.contains("step")) throw InputError(st_file.string() + ": not a valid " + what + " state");
  const auto file = dir / "state" / "adapters.safetensors";
  io::SafetensorsFile f(file.string());
  torch::NoGradGuard g;
  for (auto& [name, a] : adapters) {
    for (auto* p : {&a->down, &a->up}) {
      const auto key = name + (p == &a->down ? ".down" : ".up");
      if (!f.contains(key)) throw InputError(file.string() + ": missing " + key + " (other targets or rank?)");
      const auto v = io::load_tensor(f, key);
      if (v.sizes() != p->sizes()) throw InputError(file.string() + ": " + key + " has another shape");
      p->copy_(v);
    }
  }
  load_adamw_state(opt, dir / "state" / "optimizer.safetensors");
  return {st["step"].get<int>(), st.value("elapsed_seconds", 0.0)};
}

}  // namespace diffuse::training
