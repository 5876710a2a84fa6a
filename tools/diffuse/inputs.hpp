#pragma once
// Named input tensors of the `diffuse` subcommands (files laid out like the reference test vectors).
#include <cmath>
#include <cstdlib>
#include <filesystem>
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

// --weight-layout: "row" (as stored), "column" (copied
// column-major: the faster float32 CPU kernel; nn/linear_weight_layout.hpp) or "auto" (empty: column
// for float32 on an AVX-512 CPU, row otherwise).
inline std::optional<nn::WeightLayout> parse_weight_layout(const std::string& s) {
  if (s == "auto") return std::nullopt;
  if (s == "row") return nn::WeightLayout::RowMajor;
  if (s == "column") return nn::WeightLayout::ColumnMajor;
  throw InputError("--weight-layout must be auto, row or column, got '" + s + "'");
}

// --lora FILE[:STRENGTH]: a LoRA file and its strength (default 1). The strength is what follows
// the last ':' when that is a number, so paths with ':' still work. The file must exist.
struct LoraArg {
  std::string path;
  double strength = 1.0;
};
inline LoraArg parse_lora_arg(const std::string& s) {
  LoraArg a{s, 1.0};
  if (const auto colon = s.rfind(':'); colon != std::string::npos && colon + 1 < s.size()) {
    const auto tail = s.substr(colon + 1);
    char* end = nullptr;
    const double v = std::strtod(tail.c_str(), &end);
    if (end && *end == '\0') {
      if (!std::isfinite(v)) throw InputError("--lora " + s + ": the strength must be a finite number");
      a = {s.substr(0, colon), v};
    }
  }
  if (a.path.empty()) throw InputError("--lora: give FILE or FILE:STRENGTH");
  if (!std::filesystem::is_regular_file(a.path)) throw InputError("--lora " + a.path + ": no such file");
  return a;
}

inline constexpr const char* lora_help =
    "LoRA file (diffusers/PEFT or kohya layout) merged into the MM-DiT: FILE or FILE:STRENGTH (default 1); repeatable";

inline constexpr const char* weight_layout_help =
    "MM-DiT Linear weights in memory: auto (column for f32 on an AVX-512 CPU, else row), row (as stored) "
    "or column (copied column-major; the faster f32 CPU kernel)";

}  // namespace diffuse::cli
