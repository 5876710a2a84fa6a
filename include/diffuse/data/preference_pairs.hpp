#pragma once
// Preference data for DPO (training/dpo_loss.hpp): a JSON-lines file, one pair a line,
//   {"prompt": "a red circle", "chosen": "img/0001_a.png", "rejected": "img/0001_b.png"}
// with image paths relative to the file (Pick-a-Pic-style datasets give pairs this way). Blank
// lines are skipped; a line that is not a JSON object with the three strings, or that names an
// image that does not exist, is an error naming FILE:LINE. Torch-free.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/error.hpp"

namespace diffuse::data {

struct PreferencePair {
  std::string prompt;
  std::filesystem::path chosen, rejected;
};

inline std::vector<PreferencePair> read_preference_pairs(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw InputError(file.string() + ": cannot open the pairs file");
  const auto base = file.parent_path();
  std::vector<PreferencePair> pairs;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto where = file.string() + ":" + std::to_string(number);
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw InputError(where + ": not a JSON object");
    PreferencePair p;
    for (const char* key : {"prompt", "chosen", "rejected"})
      if (!j.contains(key) || !j[key].is_string() || j[key].get<std::string>().empty())
        throw InputError(where + ": needs a non-empty string \"" + key + "\"");
    p.prompt = j["prompt"].get<std::string>();
    p.chosen = (base / j["chosen"].get<std::string>()).lexically_normal();
    p.rejected = (base / j["rejected"].get<std::string>()).lexically_normal();
    for (const auto* img : {&p.chosen, &p.rejected})
      if (!std::filesystem::is_regular_file(*img)) throw InputError(where + ": image not found: " + img->string());
    pairs.push_back(std::move(p));
  }
  if (pairs.empty()) throw InputError(file.string() + ": no pairs (an empty pairs file)");
  return pairs;
}

}  // namespace diffuse::data
