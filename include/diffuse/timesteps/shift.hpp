#pragma once
// Resolution-dependent shifting (SD3 paper section 5.3.2, eq. 23): t' = alpha t / (1 + (alpha - 1) t).
// For m pixels trained after n pixels, alpha = sqrt(m / n) keeps the constant-image noise level
// sigma(t, n) = t / (1 - t) sqrt(1 / n) equal across resolutions. `Shifted<D>` wraps any
// distribution: samples are shifted and the density is transformed by the change of variables
// pi'(t') = pi(g^-1(t')) |d g^-1 / dt'|, with g^-1(t') = t' / (alpha - (alpha - 1) t').
#include <cmath>

#include "diffuse/core/error.hpp"
#include "diffuse/timesteps/distribution.hpp"

namespace diffuse::timesteps {

struct Shift {
  double alpha = 3.0;  // SD3's value at 1024^2 (paper section 5.3.2)

  template <class T> T operator()(const T& t) const { return T(alpha * t / (1.0 + (alpha - 1.0) * t)); }
  template <class T> T inverse(const T& t) const { return T(t / (alpha - (alpha - 1.0) * t)); }
  template <class T> T dinverse(const T& t) const {
    const T d = T(alpha - (alpha - 1.0) * t);
    return T(alpha / (d * d));
  }
  // alpha = sqrt(m / n) for m target pixels and n base pixels.
  static Shift for_resolution(double target_pixels, double base_pixels) {
    if (!(target_pixels > 0 && base_pixels > 0)) throw InputError("shift: pixel counts must be positive");
    return {std::sqrt(target_pixels / base_pixels)};
  }
};

template <TimestepDistribution D>
struct Shifted {
  static constexpr std::string_view name = "shifted";
  D base{};
  Shift shift{};

  template <class T> T density(const T& t) const { return T(base.density(shift.inverse(t)) * shift.dinverse(t)); }
  double cdf(double t) const { return base.cdf(shift.inverse(t)); }
  torch::Tensor sample(std::int64_t n, at::Generator& gen) const { return shift(base.sample(n, gen)); }
  std::string describe() const { return "shift(" + detail::num(shift.alpha) + ")*" + base.describe(); }
};

}  // namespace diffuse::timesteps
