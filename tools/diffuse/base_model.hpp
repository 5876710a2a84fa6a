#pragma once
// The base model of LoRA fine-tuning and DPO (`--init MODEL`): a `diffuse train` folder (any
// recipe this program includes) or an SD3 / SD3.5 checkpoint `diffuse generate` reads.
#include <cstdio>
#include <filesystem>
#include <string>

#include "recipes.hpp"
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

}  // namespace diffuse::cli
