#pragma once
// t ~ U(0, 1): the baseline of the SD3 paper's comparison ("rf" with uniform t).
#include "diffuse/timesteps/distribution.hpp"

namespace diffuse::timesteps {

struct Uniform {
  static constexpr std::string_view name = "uniform";
  template <class T> T density(const T& t) const { return math::full_like(t, 1.0); }
  double cdf(double t) const { return t <= 0 ? 0.0 : t >= 1 ? 1.0 : t; }
  torch::Tensor sample(std::int64_t n, at::Generator& gen) const { return detail::uniform01(n, gen); }
  std::string describe() const { return "uniform"; }
};

}  // namespace diffuse::timesteps
