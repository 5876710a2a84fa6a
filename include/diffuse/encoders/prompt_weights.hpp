#pragma once
// The "(text:1.2)" prompt-weight syntax that SD3's reference tokenizer wrapper parses
// (torch-free). Parentheses multiply the weight by 1.1 per level, "(text:w)" sets it to w, and
// "\(" / "\)" are literal parentheses. SD3's reference parses the weights and then ignores them
// when encoding; they are returned per token so that a caller may use them.
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace diffuse::encoders {

struct WeightedText {
  std::string text;
  double weight = 1.0;
};

namespace detail {

// Top-level parenthesised groups and the text between them (unbalanced ')' stays text).
inline std::vector<std::string> split_parentheses(std::string_view s) {
  std::vector<std::string> out;
  std::string current;
  int depth = 0;
  for (char c : s) {
    if (c == '(') {
      if (depth == 0) {
        if (!current.empty()) out.push_back(current);
        current.clear();  // (not `current = "("`: GCC 12 -O3 -Wall flags that with a false -Wrestrict)
        current.push_back('(');
      } else {
        current += c;
      }
      ++depth;
    } else if (c == ')') {
      --depth;
      if (depth == 0) {
        out.push_back(current + ")");
        current.clear();
      } else {
        current += c;
      }
    } else {
      current += c;
    }
  }
  if (!current.empty()) out.push_back(current);
  return out;
}

// Python's float(): surrounding whitespace allowed, the rest must be a number.
inline bool parse_python_float(std::string_view s, double& out) {
  std::string t(s);
  const auto b = t.find_first_not_of(" \t\n\r\f\v");
  if (b == std::string::npos) return false;
  const auto e = t.find_last_not_of(" \t\n\r\f\v");
  t = t.substr(b, e - b + 1);
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (end != t.c_str() + t.size()) return false;
  out = v;
  return true;
}

inline void weights_into(std::string_view s, double weight, std::vector<WeightedText>& out) {
  for (auto& part : split_parentheses(s)) {
    if (part.size() >= 2 && part.front() == '(' && part.back() == ')') {
      std::string inner = part.substr(1, part.size() - 2);
      double w = weight * 1.1;
      const auto colon = inner.rfind(':');
      if (colon != std::string::npos && colon > 0) {
        double v = 0;
        if (parse_python_float(std::string_view(inner).substr(colon + 1), v)) {
          w = v;
          inner.resize(colon);
        }
      }
      weights_into(inner, w, out);
    } else {
      out.push_back({std::move(part), weight});
    }
  }
}

// Built by appending (not std::string::replace, whose inlined copy GCC 12 -O3 flags with a false
// -Wstringop-overflow).
inline void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  out.reserve(s.size());
  std::size_t p = 0;
  for (std::size_t q; (q = s.find(from, p)) != std::string::npos; p = q + from.size()) out.append(s, p, q - p).append(to);
  s = std::move(out.append(s, p, std::string::npos));
}

}  // namespace detail

// Splits a prompt into segments of equal weight, escaped parentheses restored.
inline std::vector<WeightedText> parse_prompt_weights(std::string_view prompt) {
  std::string s(prompt);
  // Escaped parentheses are hidden behind two control bytes while the groups are parsed.
  detail::replace_all(s, "\\)", std::string("\0\1", 2));
  detail::replace_all(s, "\\(", std::string("\0\2", 2));
  std::vector<WeightedText> out;
  detail::weights_into(s, 1.0, out);
  for (auto& w : out) {
    detail::replace_all(w.text, std::string("\0\1", 2), ")");
    detail::replace_all(w.text, std::string("\0\2", 2), "(");
  }
  return out;
}

// The words SD3's wrapper tokenizes one by one: newlines become spaces, the text is split on ' '
// and empty words are dropped.
inline std::vector<std::pair<std::string, double>> weighted_words(std::string_view prompt) {
  std::vector<std::pair<std::string, double>> words;
  for (auto& seg : parse_prompt_weights(prompt)) {
    std::string t = seg.text;
    for (auto& c : t)
      if (c == '\n') c = ' ';
    std::size_t start = 0;
    while (start <= t.size()) {
      auto end = t.find(' ', start);
      if (end == std::string::npos) end = t.size();
      if (end > start) words.emplace_back(t.substr(start, end - start), seg.weight);
      start = end + 1;
    }
  }
  return words;
}

}  // namespace diffuse::encoders
