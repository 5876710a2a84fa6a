#pragma once
// Shared conventions of the `diffuse` program's subcommands: each command file defines one
// `add_<name>(CLI::App&)` that registers its options and a callback. Callbacks throw
// diffuse::InputError for bad input (exit code 2) and diffuse::Error for failures (exit code 1).
#include <string>

#include <CLI/CLI.hpp>

namespace diffuse::cli {

void add_inspect(CLI::App& app);
void add_timesteps(CLI::App& app);
void add_forward(CLI::App& app);
void add_denoise(CLI::App& app);
void add_shapes(CLI::App& app);
void add_vae(CLI::App& app);
void add_train(CLI::App& app);  // train, sample, eval
void add_text(CLI::App& app);   // tokenize, encode-text
void add_generate(CLI::App& app);
void add_dpo(CLI::App& app);     // dpo
void add_launch(CLI::App& app);  // launch: N local ranks with torchrun's environment
// Validates the launch environment (RANK, WORLD_SIZE, ...: InputError when malformed) and refuses a
// multi-process one: the trainers do not split work across processes yet.
void require_one_process(const std::string& command);

}  // namespace diffuse::cli
