#pragma once
// What the training tests share: a shapes model small enough to train a few steps in a second,
// the per-step losses a run logged, and a `diffuse` process started in the background.
#include <sys/types.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "diffuse/training/train_config.hpp"

namespace diffuse::test {

inline training::TrainConfig tiny_config() {
  auto c = training::TrainConfig::shapes_default();
  c.model = {.depth = 2, .hidden = 32, .heads = 2, .patch = 4, .in_channels = 3, .out_channels = 0, .adm_in = 16,
             .context_in = 16, .pos_embed_max_size = 4, .mlp_ratio = 2.0, .qk_norm = true, .x_self_attn_layers = {}};
  c.text = {0, 16, 1, 2, 12, 3};
  c.image_size = 16;
  c.examples = 64;
  c.validation_examples = 8;
  c.batch = 8;
  c.warmup_steps = 2;
  c.steps = 6;
  c.log_every = 1;
  c.validate_every = 0;
  c.checkpoint_minutes = 0;
  c.sample_steps = 2;
  c.precision = "f32";
  return c;
}

// The training loss of each step in a run's metrics.jsonl, in step order.
inline std::vector<double> losses(const std::filesystem::path& metrics) {
  std::vector<double> out;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("event")) {
      REQUIRE(j["step"].get<std::size_t>() == out.size() + 1);  // one line per step, in order
      out.push_back(j["loss"].get<double>());
    }
  }
  return out;
}

#ifdef DIFFUSE_CLI
// Starts `env_assignments diffuse args` in the background, its output into `log`; returns its pid.
inline pid_t start_cli(const std::string& args, const std::filesystem::path& log, const std::string& env_assignments = "") {
  const std::string line = "exec env " + env_assignments + " " + DIFFUSE_CLI + " " + args + " >" + log.string() + " 2>&1 </dev/null";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", line.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}
#endif

}  // namespace diffuse::test
