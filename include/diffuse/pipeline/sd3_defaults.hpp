#pragma once
// Generation defaults chosen the way the SD3.5 reference chooses them (torch-free).
//
// The reference (Stability-AI/sd3.5, sd3_infer.py main()) looks its CONFIGS table up by the model
// file's base name and falls back, value by value, to shift 3, 50 steps, CFG 5 and dpmpp_2m for a
// name it does not know. Its skip-layer preset (SD3.5-medium only) applies only when asked for
// (`--skip_layer_cfg True`). We go by the same table, in this order:
//   1. the file's base name (a diffusers folder: the folder's name), an exact CONFIGS key, as the
//      reference does;
//   2. the safetensors metadata where it names the model (modelspec.architecture / modelspec.title,
//      e.g. "stable-diffusion-v3.5-large-turbo"), or a diffusers folder's name, read by words;
//   3. the MM-DiT's tensors (io/model_family.hpp). SD3.5-large Turbo has Large's tensors, so from
//      tensors alone it is taken for Large — the note says so;
//   4. otherwise the reference's fallback values, and the note says that.
#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace diffuse::pipeline {

// The reference's skip-layer guidance preset (CONFIGS["sd3.5_medium"]["skip_layer_config"]).
struct SkipLayerPreset {
  double scale = 2.5, start = 0.01, end = 0.20;
  std::vector<int> layers{7, 8, 9};
  // The preset also names CFG 4, but sd3_infer.py main() assigns it after the CFG is resolved, so
  // the reference samples with the config's CFG 5; we do the same (docs/generate.md).
  double cfg = 4.0;
};

// One row of sd3_infer.py's CONFIGS (models only; its ControlNet rows belong to ControlNet files).
struct ReferenceConfig {
  std::string_view name;    // the CONFIGS key = the released file's base name
  std::string_view family;  // what io::detect_components calls the MM-DiT it names
  int steps;
  double cfg, shift;
  std::string_view sampler;
  bool skip_layer_preset;
};

inline constexpr std::array<ReferenceConfig, 4> reference_configs{{
    {"sd3_medium", "SD3-medium", 50, 5.0, 1.0, "dpmpp_2m", false},
    {"sd3.5_medium", "SD3.5-medium", 50, 5.0, 3.0, "dpmpp_2m", true},
    {"sd3.5_large", "SD3.5-large", 40, 4.5, 3.0, "dpmpp_2m", false},
    {"sd3.5_large_turbo", "SD3.5-large", 4, 1.0, 3.0, "euler", false},
}};

// CONFIGS's ControlNet rows: a ControlNet file with one of these base names replaces the model's
// steps, CFG, sampler and shift (sd3_infer.py main(), `_x = x or controlnet_config.get(...)`).
inline constexpr std::array<ReferenceConfig, 3> reference_controlnet_configs{{
    {"sd3.5_large_controlnet_blur", "SD3.5-large", 60, 3.5, 3.0, "euler", false},
    {"sd3.5_large_controlnet_canny", "SD3.5-large", 60, 3.5, 3.0, "euler", false},
    {"sd3.5_large_controlnet_depth", "SD3.5-large", 60, 3.5, 3.0, "euler", false},
}};

// sd3_infer.py main()'s values for a name not in CONFIGS, and its WIDTH / HEIGHT.
inline constexpr ReferenceConfig reference_fallback{"", "", 50, 5.0, 3.0, "dpmpp_2m", false};
inline constexpr int reference_width = 1024, reference_height = 1024;

// What is known of a model before its weights are read.
struct SD3ModelIdentity {
  std::string base_name;                        // file stem, or a diffusers folder's name
  bool folder = false;                          // base_name is a diffusers folder's name
  std::map<std::string, std::string> metadata;  // the MM-DiT file's safetensors __metadata__
  std::string family = "custom";                // from the MM-DiT's tensors
};

struct SD3Defaults {
  std::string config;         // the CONFIGS key followed; empty: the reference's fallback values
  std::string identified_by;  // "file name", "metadata modelspec.title", "folder name", "tensors", "fallback"
  std::string note;           // why the choice may surprise (Turbo from tensors, an unknown model, ...)
  int steps = reference_fallback.steps;
  double cfg = reference_fallback.cfg, shift = reference_fallback.shift;
  std::string sampler{reference_fallback.sampler};
  int width = reference_width, height = reference_height;
  std::optional<SkipLayerPreset> skip_layer_preset;  // used when skip-layer guidance is asked for
  std::string controlnet_config;  // a ControlNet's CONFIGS row that replaced steps, CFG, sampler and shift

  // Where a value the defaults set comes from, for `diffuse generate --dry-run`.
  std::string source() const {
    return !controlnet_config.empty() ? "sd3_infer.py CONFIGS[\"" + controlnet_config + "\"] (by the ControlNet's file name)"
                                      : model_source();
  }
  // Where the model's own row comes from (the skip-layer preset is the model's, never a ControlNet's).
  std::string model_source() const {
    return config.empty() ? "sd3_infer.py fallback for a model not in CONFIGS"
                          : "sd3_infer.py CONFIGS[\"" + config + "\"] (by " + identified_by + ")";
  }
};

namespace defaults_detail {

inline const ReferenceConfig* config_named(std::string_view name) {
  for (const auto& c : reference_configs)
    if (c.name == name) return &c;
  return nullptr;
}

// A model named in free text ("stable-diffusion-v3.5-large-turbo", "SD3 Medium", ...): the CONFIGS
// key it names, or empty. Read by words, so "v3.5" and "3.5" count, "3.50" does not.
inline std::string config_in_text(std::string_view text) {
  std::vector<std::string> words;
  std::string w;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || ch == '.') {
      w += static_cast<char>(std::tolower(c));
    } else if (!w.empty()) {
      words.push_back(w);
      w.clear();
    }
  }
  if (!w.empty()) words.push_back(w);
  auto has = [&](std::initializer_list<std::string_view> any) {
    return std::any_of(words.begin(), words.end(), [&](const std::string& x) {
      return std::find(any.begin(), any.end(), x) != any.end();
    });
  };
  const bool v35 = has({"3.5", "v3.5", "sd3.5", "sd35"}), v3 = has({"3", "v3", "sd3"});
  const bool large = has({"large"}), medium = has({"medium"}), turbo = has({"turbo"});
  if (v35 && large) return turbo ? "sd3.5_large_turbo" : "sd3.5_large";
  if (v35 && medium && !turbo) return "sd3.5_medium";
  if (v3 && !v35 && medium && !turbo) return "sd3_medium";
  return "";
}

inline const char* family_config(const std::string& family) {
  if (family == "SD3-medium") return "sd3_medium";
  if (family == "SD3.5-medium") return "sd3.5_medium";
  if (family == "SD3.5-large") return "sd3.5_large";
  return nullptr;
}

}  // namespace defaults_detail

inline SD3Defaults sd3_defaults(const SD3ModelIdentity& m) {
  using namespace defaults_detail;
  SD3Defaults d;
  const ReferenceConfig* c = nullptr;
  if (!m.folder && (c = config_named(m.base_name))) {
    d.identified_by = "file name";
    if (m.family != "custom" && m.family != c->family)
      d.note = "the file name says " + std::string(c->name) + " but the tensors are " + m.family +
               "; the reference goes by the name, and so do these defaults";
  }
  if (!c && m.folder) {
    const auto key = config_in_text(m.base_name);
    if (!key.empty() && (m.family == "custom" || config_named(key)->family == m.family)) {
      c = config_named(key);
      d.identified_by = "folder name";
    }
  }
  if (!c) {
    for (const char* field : {"modelspec.architecture", "modelspec.title"}) {
      const auto it = m.metadata.find(field);
      if (it == m.metadata.end()) continue;
      const auto key = config_in_text(it->second);
      if (key.empty()) continue;
      if (m.family != "custom" && config_named(key)->family != m.family) {
        d.note = std::string("metadata ") + field + " \"" + it->second + "\" names " + key + " but the tensors are " +
                 m.family + "; the tensors decide";
        continue;
      }
      c = config_named(key);
      d.identified_by = std::string("metadata ") + field;
      break;
    }
  }
  if (!c) {
    if (const char* key = family_config(m.family)) {
      c = config_named(key);
      d.identified_by = "tensors";
      if (m.family == "SD3.5-large")
        d.note += std::string(d.note.empty() ? "" : "; ") + "SD3.5-large Turbo has the same tensors as SD3.5-large; name the file sd3.5_large_turbo.safetensors "
                 "(as released) or pass --steps 4 --cfg 1 --sampler euler for Turbo";
    }
  }
  if (!c) {
    d.identified_by = "fallback";
    d.note = "unknown model (" + (m.base_name.empty() ? std::string("no name") : m.base_name) + ", " + m.family +
             " tensors): the reference's fallback defaults — " + std::to_string(reference_fallback.steps) +
             " steps, CFG 5, dpmpp_2m, shift 3";
    return d;
  }
  d.config = std::string(c->name);
  d.steps = c->steps;
  d.cfg = c->cfg;
  d.shift = c->shift;
  d.sampler = std::string(c->sampler);
  if (c->skip_layer_preset) d.skip_layer_preset = SkipLayerPreset{};
  return d;
}

// A ControlNet given with the model (its file's base name): its CONFIGS row, where it has one,
// replaces steps, CFG, sampler and shift, as sd3_infer.py main() does. For another name the
// reference would sample with no steps or shift unless all four are given; the model's defaults
// stay here, and the note says so.
inline void apply_controlnet_defaults(SD3Defaults& d, std::string_view controlnet_base_name) {
  for (const auto& c : reference_controlnet_configs)
    if (c.name == controlnet_base_name) {
      d.controlnet_config = std::string(c.name);
      d.steps = c.steps;
      d.cfg = c.cfg;
      d.shift = c.shift;
      d.sampler = std::string(c.sampler);
      return;
    }
  d.note += std::string(d.note.empty() ? "" : "; ") + "the ControlNet's file name (" + std::string(controlnet_base_name) +
            ") is no CONFIGS row: the model's defaults stay (the reference needs --steps, --cfg, --sampler and --shift "
            "given then; its rows are sd3.5_large_controlnet_blur, _canny and _depth: 60 steps, CFG 3.5, euler, shift 3)";
}

}  // namespace diffuse::pipeline
