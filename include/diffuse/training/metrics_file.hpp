#pragma once
// A run's metrics.jsonl: one JSON object a line, appended through one open stream (not an open per
// step) and flushed per line, so a killed run keeps every line it logged. On resume the lines of
// the steps after the checkpoint are dropped (forget_after), since those steps run again.
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "diffuse/training/checkpoint_files.hpp"

namespace diffuse::training {

class MetricsFile {
 public:
  explicit MetricsFile(std::filesystem::path path) : path_(std::move(path)) {}
  const std::filesystem::path& path() const { return path_; }

  void append(const nlohmann::json& j) {
    if (!out_.is_open()) out_.open(path_, std::ios::app);
    out_ << j.dump() << "\n";
    out_.flush();
  }
  // Keeps the lines whose "step" is at most `step` (unparsable lines go too).
  void forget_after(int step) {
    out_.close();
    std::string kept;
    std::ifstream in(path_);
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("step", 0) <= step) kept += line + "\n";
    }
    trainer_detail::write_text(path_, kept);
  }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace diffuse::training
