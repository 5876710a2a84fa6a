#pragma once
// Fills a torch module's parameters from a safetensors file by name, under a key prefix, and
// reports every missing, mis-shaped and unexpected tensor together (nothing is half-loaded
// silently). Tensors already in the wanted dtype stay memory-mapped (no second copy).
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "diffuse/core/format.hpp"
#include "diffuse/io/safetensors.hpp"

namespace diffuse::io {

struct ModuleWeightsOptions {
  std::optional<torch::ScalarType> dtype;              // empty: keep the stored dtype
  std::map<std::string, std::string> aliases;          // parameter name -> other key it may be stored under
  std::vector<std::string> owned;                      // key heads (after the prefix) this module owns
  std::set<std::string> ignored;                       // keys (after the prefix) that may be present unused
};

inline void load_module_weights(torch::nn::Module& module, const SafetensorsFile& file, const std::string& prefix,
                                const ModuleWeightsOptions& o, const std::string& what) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> problems;
  std::set<std::string> used;
  LoadOptions lo;
  lo.dtype = o.dtype;
  for (auto& p : module.named_parameters(true)) {
    const TensorInfo* info = file.header().find(prefix + p.key());
    if (!info)
      if (auto a = o.aliases.find(p.key()); a != o.aliases.end()) info = file.header().find(prefix + a->second);
    if (!info) {
      problems.push_back("missing " + prefix + p.key() + " " + format_shape(p.value().sizes().vec()));
      continue;
    }
    used.insert(info->name);
    if (info->shape != p.value().sizes().vec()) {
      problems.push_back("shape of " + info->name + ": expected " + format_shape(p.value().sizes().vec()) + ", found " +
                         format_shape(info->shape));
      continue;
    }
    p.value().set_data(load_tensor(file, *info, lo));
  }
  for (const auto& t : file.tensors()) {
    if (!t.name.starts_with(prefix) || used.count(t.name)) continue;
    const auto rest = t.name.substr(prefix.size());
    if (o.ignored.count(rest)) continue;
    for (const auto& head : o.owned)
      if (rest.starts_with(head)) {
        problems.push_back("unexpected " + t.name + " " + format_shape(t.shape));
        break;
      }
  }
  throw_if_problems(file.path(), what + " weights do not match", problems);
}

}  // namespace diffuse::io
