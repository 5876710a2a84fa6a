#pragma once
// Logit-normal sampling (SD3 paper eq. 19): t = sigmoid(u), u ~ N(m, s^2);
// pi(t) = 1 / (s sqrt(2 pi)) * 1 / (t (1 - t)) * exp(-(logit(t) - m)^2 / (2 s^2)).
// m < 0 favours data (low t), m > 0 noise; the paper's best is m = 0, s = 1.
#include <cmath>

#include "diffuse/timesteps/distribution.hpp"

namespace diffuse::timesteps {

struct LogitNormal {
  static constexpr std::string_view name = "logit_normal";
  double m = 0.0;  // location
  double s = 1.0;  // scale

  template <class T> T density(const T& t) const {
    const T logit = math::log(T(t / (1.0 - t)));
    const T z = T((logit - m) / s);
    return T(math::exp(T(-0.5 * z * z)) / (s * std::sqrt(2.0 * math::pi) * t * (1.0 - t)));
  }
  double cdf(double t) const {
    if (t <= 0) return 0.0;
    if (t >= 1) return 1.0;
    return 0.5 * std::erfc(-(std::log(t / (1.0 - t)) - m) / (s * std::sqrt(2.0)));
  }
  torch::Tensor sample(std::int64_t n, at::Generator& gen) const {
    return torch::sigmoid(torch::randn({n}, gen, torch::TensorOptions().dtype(torch::kFloat64)) * s + m);
  }
  std::string describe() const { return "logit_normal(" + detail::num(m) + "," + detail::num(s) + ")"; }
};

}  // namespace diffuse::timesteps
