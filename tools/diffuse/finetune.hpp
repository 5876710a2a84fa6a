#pragma once
// `diffuse train --init MODEL --data DIR ...` (finetune.cpp): the options of LoRA fine-tuning,
// registered on the train subcommand beside its own.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "recipes.hpp"

namespace diffuse::cli {

struct LoraOptions {
  std::string init, data, out, config, objective, dtype = "bf16", tokenizers;
  std::vector<std::string> targets;
  int rank = 0, resolution = 0, batch = 0, steps = 0, checkpoint_every = -1, recompute_every = -1;
  double alpha = 0, lr = 0, shift = 0, minutes = 0;
  bool resume = false, seed_set = false;
  std::uint64_t seed = 0;
  // Whether an option that only LoRA fine-tuning reads was given (the others serve training from
  // scratch too: --data, --resolution, --batch, --lr, --objective, --shift, --tokenizers).
  bool any_lora_only_option() const {
    return !targets.empty() || rank > 0 || checkpoint_every >= 0 || recompute_every >= 0 || alpha > 0 || dtype != "bf16";
  }
};

void add_lora_train_options(CLI::App& cmd, std::shared_ptr<LoraOptions> l);
void run_lora_train(const LoraOptions& o);

}  // namespace diffuse::cli
