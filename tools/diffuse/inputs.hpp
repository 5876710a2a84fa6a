#pragma once
// Named input tensors of the `diffuse` subcommands (files laid out like the reference test vectors).
#include <optional>
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

// --weight-layout: "row" (as stored, the weights stay views of the file), "column" (copied
// column-major: the faster float32 CPU kernel; nn/linear_weight_layout.hpp) or "auto" (empty: column
// for float32 on an AVX-512 CPU, row otherwise).
inline std::optional<nn::WeightLayout> parse_weight_layout(const std::string& s) {
  if (s == "auto") return std::nullopt;
  if (s == "row") return nn::WeightLayout::RowMajor;
  if (s == "column") return nn::WeightLayout::ColumnMajor;
  throw InputError("--weight-layout must be auto, row or column, got '" + s + "'");
}

inline constexpr const char* weight_layout_help =
    "MM-DiT Linear weights in memory: auto (column for f32 on an AVX-512 CPU, else row), row (as stored, "
    "views of the file) or column (copied column-major; the faster f32 CPU kernel)";

}  // namespace diffuse::cli
