#pragma once
// The cosine schedule (torch-free; Nichol & Dhariwal 2021 in its continuous form, as the SD3
// paper writes it, section 3.1): a_t = cos(pi t / 2), b_t = sin(pi t / 2); variance preserving.
#include <string_view>

#include "diffuse/process/process.hpp"
#include "diffuse/process/target.hpp"

namespace diffuse::process {

struct Cosine {
  static constexpr std::string_view name = "cos";
  static constexpr bool variance_preserving = true;
  using default_target = Eps;

  template <class T> T a(const T& t) const { return math::cos(T(0.5 * math::pi * t)); }
  template <class T> T b(const T& t) const { return math::sin(T(0.5 * math::pi * t)); }
  template <class T> T da(const T& t) const { return T(-0.5 * math::pi * math::sin(T(0.5 * math::pi * t))); }
  template <class T> T db(const T& t) const { return T(0.5 * math::pi * math::cos(T(0.5 * math::pi * t))); }
};

}  // namespace diffuse::process
