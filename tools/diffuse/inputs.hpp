#pragma once
// Named input tensors of the `diffuse` subcommands (files laid out like the reference test vectors).
#include <string>

#include <torch/types.h>  // before ordered_dict.h, which uses TORCH_CHECK without including it
#include <torch/ordered_dict.h>

#include "diffuse/core/error.hpp"
#include "diffuse/nn/linear_weight_layout.hpp"

namespace diffuse::cli {

inline torch::Tensor need_tensor(const torch::OrderedDict<std::string, torch::Tensor>& in, const std::string& name,
                                 const std::string& path) {
  if (const auto* t = in.find(name)) return *t;
  throw InputError(path + ": input tensor '" + name + "' is missing");
}

// --weight-layout: "row" (as stored, the weights stay views of the file) or "column" (copied
// column-major: the faster float32 CPU kernel below 512 tokens a stream; nn/linear_weight_layout.hpp).
inline nn::WeightLayout parse_weight_layout(const std::string& s) {
  if (s == "row") return nn::WeightLayout::RowMajor;
  if (s == "column") return nn::WeightLayout::ColumnMajor;
  throw InputError("--weight-layout must be row or column, got '" + s + "'");
}

inline constexpr const char* weight_layout_help =
    "MM-DiT Linear weights in memory: row (as stored) or column (copied column-major; faster in f32 on "
    "the CPU below 512 tokens a stream)";

}  // namespace diffuse::cli
