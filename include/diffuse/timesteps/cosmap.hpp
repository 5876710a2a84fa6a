#pragma once
// CosMap (SD3 paper eq. 21): the rectified-flow t whose log-SNR matches the cosine schedule's for
// uniform u: t = f(u) = 1 - 1 / (tan(pi u / 2) + 1); pi(t) = 2 / (pi - 2 pi t + 2 pi t^2).
#include <cmath>

#include "diffuse/timesteps/distribution.hpp"

namespace diffuse::timesteps {

struct CosMap {
  static constexpr std::string_view name = "cosmap";
  template <class T> T density(const T& t) const {
    return T(2.0 / (math::pi - 2.0 * math::pi * t + 2.0 * math::pi * t * t));
  }
  // f^-1(t) = (2 / pi) atan(t / (1 - t)), increasing, so it is the CDF.
  double cdf(double t) const { return t <= 0 ? 0.0 : t >= 1 ? 1.0 : 2.0 / math::pi * std::atan(t / (1.0 - t)); }
  torch::Tensor sample(std::int64_t n, at::Generator& gen) const {
    const auto u = detail::uniform01(n, gen);
    return 1.0 - 1.0 / (torch::tan(0.5 * math::pi * u) + 1.0);
  }
  std::string describe() const { return "cosmap"; }
};

}  // namespace diffuse::timesteps
