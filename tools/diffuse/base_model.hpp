#pragma once
// The base model of LoRA fine-tuning and DPO (`--init MODEL`): a `diffuse train` folder (any
// recipe this program includes) or an SD3 / SD3.5 checkpoint `diffuse generate` reads.
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>

#include "recipes.hpp"
#include "diffuse/core/config.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/pipeline/sd3_generator.hpp"
#include "diffuse/pipeline/trained_model.hpp"

namespace diffuse::cli {

// Loads MODEL and calls f.template operator()<Objective>(base). `dtype` (bf16 | f32) is the base
// weights' dtype for an SD3 checkpoint; a trained folder keeps its float32 weights.
template <class F>
void with_base_model(const std::string& init, const std::string& tokenizers, const std::string& dtype, F&& f) {
  if (std::filesystem::is_regular_file(std::filesystem::path(init) / "recipe.txt")) {  // a `diffuse train` folder
    with_recipe(recipe_of(init), [&]<class P>() {
      pipeline::TrainedModel<P> base(init);
      std::fprintf(stderr, "base: %s (step %d, %s)\n", base.weights().string().c_str(), base.step(), P::describe().c_str());
      f.template operator()<typename P::objective_type>(base);
    });
    return;
  }
  pipeline::SD3ModelFiles given;
  given.tokenizers = tokenizers;
  const auto files = pipeline::find_sd3_model(init, given);
  pipeline::SD3GeneratorOptions go;
  if (dtype == "bf16") go.dtype = torch::kBFloat16;
  else if (dtype == "f32") go.dtype = torch::kFloat32;
  else throw InputError("--dtype must be bf16 or f32, got '" + dtype + "'");
  std::fprintf(stderr, "base: %s (MM-DiT %s, base weights in %s)\n", files.family.c_str(), files.mmdit.c_str(), dtype.c_str());
  pipeline::SD3Generator base(files, go);
  f.template operator()<pipeline::SD3Objective>(base);
}

// `--resume` of an adapter run (LoRA fine-tuning, DPO): the run goes on with the config it saved
// as OUT/FILE_NAME. An option given again must equal the saved value: the options both commands
// share are checked here, the command's own ones by `own`. Returns the saved config.
using OptionCheck = std::function<void(bool given, bool same, const char* option)>;
template <class Config, class Options>
Config resumed_adapter_config(const Options& o, const std::string& file_name, const Config& defaults,
                              const std::function<void(const Config&, const OptionCheck&)>& own = {}) {
  const auto file = std::filesystem::path(o.out) / file_name;
  if (!std::filesystem::is_regular_file(file)) throw InputError(file.string() + ": missing, nothing to resume");
  const auto saved = load_config<Config>(file, defaults);
  const OptionCheck differs = [&](bool given, bool same, const char* option) {
    if (given && !same)
      throw InputError("--resume continues the run in " + o.out + " with its saved " + file_name + "; " + option + " differs from it");
  };
  differs(!o.config.empty(), false, "--config");
  differs(o.rank > 0, o.rank == saved.rank, "--lora-rank");
  differs(o.alpha > 0, o.alpha == saved.alpha, "--lora-alpha");
  differs(!o.targets.empty(), o.targets == saved.targets, "--lora-targets");
  differs(o.resolution > 0, o.resolution == saved.resolution, "--resolution");
  differs(o.batch > 0, o.batch == saved.batch, "--batch");
  differs(o.lr > 0, o.lr == saved.lr, "--lr");
  differs(!o.objective.empty(), o.objective == saved.objective, "--objective");
  differs(o.shift > 0, o.shift == saved.timestep_shift, "--shift");
  differs(o.seed_set, o.seed == saved.seed, "--seed");
  differs(true, std::filesystem::path(o.init) == std::filesystem::path(saved.base_model), "--init");
  if (own) own(saved, differs);
  return saved;
}

// The options LoRA fine-tuning and DPO share, over a config (given ones replace its values), and
// the budget: --steps N alone, or --minutes M.
template <class Config, class Options>
void apply_adapter_options(const Options& o, Config& c) {
  if (o.rank > 0) c.rank = o.rank;
  if (o.alpha > 0) c.alpha = o.alpha;
  if (!o.targets.empty()) c.targets = o.targets;
  if (o.resolution > 0) c.resolution = o.resolution;
  if (o.batch > 0) c.batch = o.batch;
  if (o.lr > 0) c.lr = o.lr;
  if (!o.objective.empty()) c.objective = o.objective;
  if (o.shift > 0) c.timestep_shift = o.shift;
  if (o.seed_set) c.seed = o.seed;
  if (o.checkpoint_every >= 0) c.checkpoint_every = o.checkpoint_every;
}
template <class Config, class Options>
void apply_budget(const Options& o, Config& c) {
  if (o.steps > 0) c.steps = o.steps, c.minutes = 0;
  if (o.minutes > 0) c.minutes = o.minutes;
}

}  // namespace diffuse::cli
