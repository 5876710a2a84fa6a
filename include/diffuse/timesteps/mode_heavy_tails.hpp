#pragma once
// Mode sampling with heavy tails (SD3 paper eq. 20): t = f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u),
// u ~ U(0, 1). f is a decreasing bijection of [0, 1] exactly when -1 <= s <= 2 / (pi - 2), so
// other s are rejected. s > 0 puts mass in the middle, s < 0 at the ends; s = 0 is uniform.
// pi(t) = 1 / |f'(f^-1(t))|, with f^-1 found by bisection (f has no closed-form inverse).
#include <cmath>

#include "diffuse/core/error.hpp"
#include "diffuse/timesteps/distribution.hpp"

namespace diffuse::timesteps {

class ModeHeavyTails {
 public:
  static constexpr std::string_view name = "mode";
  static constexpr double s_min = -1.0;
  static constexpr double s_max = 2.0 / (math::pi - 2.0);  // about 1.7519

  explicit ModeHeavyTails(double s = 1.29) : s_(s) {
    if (!(s >= s_min && s <= s_max))
      throw InputError("mode(s): s = " + detail::num(s) + " is outside [-1, 2/(pi-2) = 1.7519], where t = f(u) " +
                       "stops being a bijection of [0, 1]");
  }
  double s() const { return s_; }

  double f(double u) const {
    const double c = std::cos(0.5 * math::pi * u);
    return 1.0 - u - s_ * (c * c - 1.0 + u);
  }
  double df(double u) const { return -1.0 - s_ + 0.5 * math::pi * s_ * std::sin(math::pi * u); }
  // u with f(u) = t (f decreases from 1 at u = 0 to 0 at u = 1).
  double f_inverse(double t) const {
    double lo = 0.0, hi = 1.0;
    for (int i = 0; i < 60; ++i) {
      const double mid = 0.5 * (lo + hi);
      (f(mid) > t ? lo : hi) = mid;
    }
    return 0.5 * (lo + hi);
  }

  template <class T> T density(const T& t) const {
    return math::map(t, [this](double x) {
      if (x <= 0 || x >= 1) return 0.0;
      return 1.0 / std::abs(df(f_inverse(x)));
    });
  }
  double cdf(double t) const { return t <= 0 ? 0.0 : t >= 1 ? 1.0 : 1.0 - f_inverse(t); }
  torch::Tensor sample(std::int64_t n, at::Generator& gen) const {
    const auto u = detail::uniform01(n, gen);
    const auto c = torch::cos(0.5 * math::pi * u);
    return (1.0 - u - s_ * (c * c - 1.0 + u)).clamp(0.0, 1.0);
  }
  std::string describe() const { return "mode(" + detail::num(s_) + ")"; }

 private:
  double s_;
};

}  // namespace diffuse::timesteps
