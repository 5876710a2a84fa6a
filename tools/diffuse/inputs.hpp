#pragma once
// Named input tensors of the `diffuse` subcommands (files laid out like the reference test vectors).
#include <string>

#include <torch/types.h>  // before ordered_dict.h, which uses TORCH_CHECK without including it
#include <torch/ordered_dict.h>

#include "diffuse/core/error.hpp"

namespace diffuse::cli {

inline torch::Tensor need_tensor(const torch::OrderedDict<std::string, torch::Tensor>& in, const std::string& name,
                                 const std::string& path) {
  if (const auto* t = in.find(name)) return *t;
  throw InputError(path + ": input tensor '" + name + "' is missing");
}

}  // namespace diffuse::cli
