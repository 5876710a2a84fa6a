#pragma once
// Fills a torch module's parameters from a safetensors file (or its shards) by name, under a key prefix, and
// reports every missing, mis-shaped and unexpected tensor together (nothing is half-loaded
// silently). Tensors already in the wanted dtype stay memory-mapped (no second copy).
#include <algorithm>
#include <filesystem>
#include <map>
#include <tuple>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "diffuse/core/format.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/nn/layers.hpp"

namespace diffuse::io {

// The .safetensors files directly in `dir`, sorted (shards sort in order); empty if it is no folder.
inline std::vector<std::string> safetensors_in(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  if (!std::filesystem::is_directory(dir)) return names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") names.push_back(e.path().string());
  std::sort(names.begin(), names.end());
  return names;
}

// One checkpoint that may be split over several files (diffusers' model-00001-of-00002.safetensors
// shards): a file, or a folder whose .safetensors files are all read. Tensors are looked up by
// name across the shards; header() lists them all (names, shapes) for detection.
class WeightFiles {
 public:
  explicit WeightFiles(const std::string& path) : path_(path) {
    if (std::filesystem::is_directory(path)) {
      const auto names = safetensors_in(path);
      if (names.empty()) throw InputError(path + ": no .safetensors files in this folder");
      for (const auto& n : names) files_.emplace_back(n);
    } else {
      files_.emplace_back(path);
    }
    index();
  }
  WeightFiles(const SafetensorsFile& f) : path_(f.path()), files_{f} { index(); }  // NOLINT: a file is a one-shard checkpoint

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }
  const Header& header() const { return merged_; }
  const std::vector<TensorInfo>& tensors() const { return merged_.tensors; }
  // The shard holding `name` and its entry there, or {nullptr, nullptr}.
  std::pair<const SafetensorsFile*, const TensorInfo*> find(const std::string& name) const {
    for (const auto& f : files_)
      if (const auto* t = f.header().find(name)) return {&f, t};
    return {nullptr, nullptr};
  }

 private:
  void index() {
    for (const auto& f : files_)
      for (const auto& t : f.tensors()) merged_.tensors.push_back(t);
  }
  std::string path_;
  std::vector<SafetensorsFile> files_;
  Header merged_;
};

// make() run for a module whose every parameter a loader is about to set: its layers are allocated,
// not drawn at random (nn::SkipParameterInit: the draws were most of an MM-DiT's load time), and
// allocated in `dtype`, the dtype its weights will have, rather than in float32 first (LibTorch's
// default dtype is process-wide: it is restored before returning, and nothing else should
// construct modules on another thread meanwhile).
template <class Make>
auto construct_for_loading(torch::ScalarType dtype, Make&& make) {
  const nn::SkipParameterInit uninitialised;
  const auto previous = c10::get_default_dtype();
  if (c10::isFloatingType(dtype)) c10::set_default_dtype(c10::scalarTypeToTypeMeta(dtype));
  try {
    auto built = make();
    c10::set_default_dtype(previous);
    return built;
  } catch (...) {
    c10::set_default_dtype(previous);
    throw;
  }
}

struct ModuleWeightsOptions {
  std::optional<torch::ScalarType> dtype;              // empty: keep the stored dtype
  std::map<std::string, std::string> aliases;          // parameter name -> other key it may be stored under
  std::vector<std::string> owned;                      // key heads (after the prefix) this module owns
  std::set<std::string> ignored;                       // keys (after the prefix) that may be present unused
  bool in_memory = true;                               // read, not viewed in the mapping (LoadOptions::in_memory)
};

inline void load_module_weights(torch::nn::Module& module, const WeightFiles& file, const std::string& prefix,
                                const ModuleWeightsOptions& o, const std::string& what) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> problems;
  std::set<std::string> used;
  LoadOptions lo;
  lo.dtype = o.dtype;
  lo.in_memory = o.in_memory;
  for (auto& p : module.named_parameters(true)) {
    auto [shard, info] = file.find(prefix + p.key());
    if (!info)
      if (auto a = o.aliases.find(p.key()); a != o.aliases.end()) std::tie(shard, info) = file.find(prefix + a->second);
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
    p.value().set_data(load_tensor(*shard, *info, lo));
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
