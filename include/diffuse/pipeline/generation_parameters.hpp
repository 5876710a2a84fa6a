#pragma once
// Generation parameters as text (torch-free): the "parameters" PNG text chunk in the form that
// AUTOMATIC1111's web UI and stable-diffusion.cpp write, so that their readers show diffuse's images
// and `diffuse inspect img.png` reads them back.
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "diffuse/core/error.hpp"

namespace diffuse::pipeline {

// What a request resolved to (for the PNG's parameters and logs).
struct GenerateSettings {
  int width = 0, height = 0, steps = 0;
  double cfg = 0, shift = 0, slg_scale = 0;
  std::string sampler;
  std::vector<int> skip_layers;
  double slg_start = 0.01, slg_end = 0.2;  // fractions of the steps with skip-layer guidance
};

// The generation parameters in the text form that A1111 and stable-diffusion.cpp write into a
// PNG's "parameters" chunk: the prompt, "Negative prompt: ...", then "Key: value" pairs.
inline std::string parameters_text(const std::string& prompt, const std::string& negative, const GenerateSettings& s,
                                   std::uint64_t seed, const std::string& model, const std::string& version) {
  std::string t = prompt + "\n";
  if (!negative.empty()) t += "Negative prompt: " + negative + "\n";
  auto num = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return std::string(b);
  };
  t += "Steps: " + std::to_string(s.steps) + ", Sampler: " + s.sampler + ", CFG scale: " + num(s.cfg) +
       ", Seed: " + std::to_string(seed) + ", Size: " + std::to_string(s.width) + "x" + std::to_string(s.height) +
       ", Model: " + model + ", Shift: " + num(s.shift);
  if (s.slg_scale != 0) {
    std::string layers;
    for (std::size_t i = 0; i < s.skip_layers.size(); ++i) layers += (i ? " " : "") + std::to_string(s.skip_layers[i]);
    t += ", SLG scale: " + num(s.slg_scale) + ", Skip layers: " + layers;
  }
  return t + ", Version: " + version;
}

// Reads parameters_text back: "prompt", "negative" and every "Key: value" pair of the last line.
inline std::map<std::string, std::string> parse_parameters_text(const std::string& text) {
  std::map<std::string, std::string> out;
  auto last_nl = text.rfind('\n');
  if (last_nl == std::string::npos) throw InputError("parameters text: expected at least two lines");
  const std::string head = text.substr(0, last_nl), tail = text.substr(last_nl + 1);
  const auto neg = head.find("\nNegative prompt: ");
  out["prompt"] = neg == std::string::npos ? head : head.substr(0, neg);
  out["negative"] = neg == std::string::npos ? "" : head.substr(neg + 18);
  std::size_t a = 0;
  while (a < tail.size()) {
    auto b = tail.find(", ", a);
    if (b == std::string::npos) b = tail.size();
    const auto item = tail.substr(a, b - a);
    const auto colon = item.find(": ");
    if (colon == std::string::npos) throw InputError("parameters text: '" + item + "' is not 'Key: value'");
    out[item.substr(0, colon)] = item.substr(colon + 2);
    a = b + 2;
  }
  return out;
}

}  // namespace diffuse::pipeline
