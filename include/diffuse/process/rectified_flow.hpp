#pragma once
// Rectified flow (torch-free): z_t = (1 - t) x0 + t eps, the straight path of SD3 (paper
// section 2, eq. 3 with a_t = 1 - t, b_t = t). Its natural target is the velocity eps - x0.
#include <string_view>

#include "diffuse/process/process.hpp"
#include "diffuse/process/target.hpp"

namespace diffuse::process {

struct RectifiedFlow {
  static constexpr std::string_view name = "rf";
  static constexpr bool variance_preserving = false;
  using default_target = Velocity;

  template <class T> T a(const T& t) const { return T(1.0 - t); }
  template <class T> T b(const T& t) const { return t; }
  template <class T> T da(const T& t) const { return math::full_like(t, -1.0); }
  template <class T> T db(const T& t) const { return math::full_like(t, 1.0); }
};

}  // namespace diffuse::process
