#pragma once
// Loads an SD3 ControlNet file (backbone/controlnet_config.hpp has the layouts) for a given MM-DiT:
// its blocks under the reference's names, its embedders under diffusers' names or the
// reference's (sd3_infer.py CONTROLNET_MAP renames the first to the second); every missing or
// mis-shaped tensor is reported at once.
#include <map>
#include <optional>
#include <set>
#include <string>

#include <torch/types.h>

#include "diffuse/backbone/controlnet.hpp"
#include "diffuse/io/module_weights.hpp"
#include "diffuse/nn/linear_weight_layout.hpp"

namespace diffuse::io {

struct ControlNetLoadOptions {
  std::optional<torch::ScalarType> dtype;  // empty: as stored
  torch::Device device = torch::kCPU;
  std::optional<nn::WeightLayout> weight_layout;  // as io::MMDiTLoadOptions
  bool in_memory = true;                          // as io::MMDiTLoadOptions
};

inline backbone::ControlNet load_controlnet(const std::string& path, const backbone::MMDiTConfig& base,
                                            const ControlNetLoadOptions& opt = {}) {
  WeightFiles files(path);
  const auto config = backbone::detect_controlnet_config(files.files().front(), base);
  ModuleWeightsOptions mo;
  mo.dtype = opt.dtype;
  mo.in_memory = opt.in_memory;
  for (const char* wb : {"weight", "bias"}) {
    const std::string s = wb;
    mo.aliases["t_embedder.mlp.0." + s] = "time_text_embed.timestep_embedder.linear_1." + s;
    mo.aliases["t_embedder.mlp.2." + s] = "time_text_embed.timestep_embedder.linear_2." + s;
    mo.aliases["y_embedder.mlp.0." + s] = "time_text_embed.text_embedder.linear_1." + s;
    mo.aliases["y_embedder.mlp.2." + s] = "time_text_embed.text_embedder.linear_2." + s;
    mo.aliases["x_embedder.proj." + s] = "pos_embed.proj." + s;
    // The 8B form reads the MM-DiT's patch embedding; a stored one of its own goes unused (as in the reference).
    if (config.form == backbone::ControlNetForm::PooledText8B) {
      mo.ignored.insert("pos_embed.proj." + s);
      mo.ignored.insert("x_embedder.proj." + s);
    }
  }
  mo.ignored.insert("control_type");
  mo.owned = {"transformer_blocks.", "controlnet_blocks.", "pos_embed_input.", "time_text_embed.",
              "t_embedder.", "y_embedder.", "x_embedder.", "pos_embed."};
  const auto dtype = opt.dtype.value_or(to_scalar_type(files.files().front().info("controlnet_blocks.0.weight").dtype));
  auto net = construct_for_loading(dtype, [&] { return backbone::ControlNet(config, base); });
  load_module_weights(*net, files, "", mo, "ControlNet");
  net->to(opt.device);
  nn::set_linear_weight_layout(*net, opt.weight_layout.value_or(nn::preferred_weight_layout(dtype, opt.device)));
  net->eval();
  return net;
}

}  // namespace diffuse::io
