#pragma once
// Flow matching with sigma_min (torch-free; Lipman et al. 2023, as written in the SD3 paper's
// section 3.1): z_t = (1 - t) x0 + ((1 - t) sigma_min + t) eps, so z_1 = eps and z_0 keeps a
// sigma_min trace of noise. sigma_min = 0 is rectified flow.
#include <string_view>

#include "diffuse/process/process.hpp"
#include "diffuse/process/target.hpp"

namespace diffuse::process {

struct FlowMatching {
  static constexpr std::string_view name = "fm";
  static constexpr bool variance_preserving = false;
  using default_target = Velocity;

  double sigma_min = 1e-5;  // a small value, so the path starts just off the data

  template <class T> T a(const T& t) const { return T(1.0 - t); }
  template <class T> T b(const T& t) const { return T((1.0 - t) * sigma_min + t); }
  template <class T> T da(const T& t) const { return math::full_like(t, -1.0); }
  template <class T> T db(const T& t) const { return math::full_like(t, 1.0 - sigma_min); }
};

}  // namespace diffuse::process
