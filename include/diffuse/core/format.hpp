#pragma once
// Small text helpers for error messages (torch-free): tensor shapes as "[2, 16, 8, 8]" and the
// all-problems-at-once report that checkpoint loaders throw.
#include <cstdint>
#include <string>
#include <vector>

#include "diffuse/core/error.hpp"

namespace diffuse {

inline std::string format_shape(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Throws one InputError listing every problem (at most 40 lines) when there are any.
inline void throw_if_problems(const std::string& path, const std::string& what, const std::vector<std::string>& problems) {
  if (problems.empty()) return;
  std::string msg = path + ": " + what + " (" + std::to_string(problems.size()) + " problems):";
  for (std::size_t i = 0; i < problems.size() && i < 40; ++i) msg += "\n  " + problems[i];
  if (problems.size() > 40) msg += "\n  ... and " + std::to_string(problems.size() - 40) + " more";
  throw InputError(msg);
}

}  // namespace diffuse
