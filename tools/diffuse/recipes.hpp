#pragma once
// The pipeline typedefs the `diffuse` program includes, chosen by name (pipeline/pipeline.hpp):
// each is compiled in, none is dispatched inside the library.
#include <filesystem>
#include <fstream>
#include <string>

#include "diffuse/core/error.hpp"
#include "diffuse/pipeline/pipeline.hpp"

namespace diffuse::cli {

// Runs f.template operator()<Recipe>() for the recipe named `name`.
template <class F>
void with_recipe(const std::string& name, F&& f) {
  if (name == "sd3-pixels") f.template operator()<pipeline::SD3PixelRecipe>();
  else if (name == "sd3") f.template operator()<pipeline::SD3Recipe>();
  else if (name == "sd3-text-stack") f.template operator()<pipeline::SD3TextStackRecipe>();
  else
    throw InputError("--recipe must be sd3-pixels (SD3's recipe on pixels, the shapes default), sd3 (with a KL autoencoder) "
                     "or sd3-text-stack (SD3's released text encoders and VAE)");
}

// The recipe name of a `diffuse train` folder, from its recipe.txt.
inline std::string recipe_of(const std::filesystem::path& dir) {
  std::ifstream in(dir / "recipe.txt");
  std::string line;
  if (!in || !std::getline(in, line)) throw InputError((dir / "recipe.txt").string() + ": missing (is this a `diffuse train --out` folder?)");
  if (line == pipeline::SD3PixelRecipe::describe()) return "sd3-pixels";
  if (line == pipeline::SD3Recipe::describe()) return "sd3";
  if (line == pipeline::SD3TextStackRecipe::describe()) return "sd3-text-stack";
  throw InputError((dir / "recipe.txt").string() + ": a recipe this program does not include: " + line);
}

}  // namespace diffuse::cli
