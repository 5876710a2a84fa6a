#pragma once
// LDM-linear (torch-free): the discrete DDPM process of Stable Diffusion 1/2 (Rombach et al.
// 2022) as the SD3 paper compares it (section 3.1): the "scaled linear" schedule with sqrt(beta)
// linear from sqrt(0.00085) to sqrt(0.012) over N = 1000 steps, a_t = sqrt(alpha_bar),
// b_t = sqrt(1 - a_t^2), alpha_bar_k = prod_{j<k} (1 - beta_j).
//
// t in [0, 1] maps to the continuous index tau = t N. Between integers log(alpha_bar) is linear
// in tau (the geometric interpolation of the products), so a, b and their derivatives are defined
// for every t and equal the discrete values at t = k / N. At t = 1, a_t is about 0.068: this
// schedule never reaches pure noise (a known property of it).
#include <algorithm>
#include <cmath>
#include <string_view>
#include <vector>

#include "diffuse/process/process.hpp"
#include "diffuse/process/target.hpp"

namespace diffuse::process {

class LDMLinear {
 public:
  static constexpr std::string_view name = "linear";
  static constexpr bool variance_preserving = true;
  using default_target = Eps;

  explicit LDMLinear(double beta_start = 0.00085, double beta_end = 0.012, int steps = 1000)
      : beta_start_(beta_start), beta_end_(beta_end), log_alpha_bar_(steps + 1, 0.0), slope_(steps, 0.0) {
    const double s0 = std::sqrt(beta_start), s1 = std::sqrt(beta_end);
    for (int j = 0; j < steps; ++j) {
      const double sb = s0 + (s1 - s0) * j / (steps - 1);
      slope_[j] = std::log1p(-sb * sb);  // log(1 - beta_j)
      log_alpha_bar_[j + 1] = log_alpha_bar_[j] + slope_[j];
    }
  }

  int steps() const { return static_cast<int>(slope_.size()); }
  double beta_start() const { return beta_start_; }
  double beta_end() const { return beta_end_; }

  // log(alpha_bar) at t and its t-derivative, in double.
  double log_alpha_bar(double t) const {
    const auto [k, frac] = locate(t);
    return log_alpha_bar_[k] + frac * slope_[k];
  }
  double dlog_alpha_bar(double t) const { return steps() * slope_[locate(t).first]; }

  template <class T> T a(const T& t) const {
    return math::map(t, [this](double s) { return std::exp(0.5 * log_alpha_bar(s)); });
  }
  template <class T> T b(const T& t) const {
    return math::map(t, [this](double s) { return std::sqrt(-std::expm1(log_alpha_bar(s))); });
  }
  // a = exp(l / 2): a' = a l' / 2
  template <class T> T da(const T& t) const {
    return math::map(t, [this](double s) { return 0.5 * std::exp(0.5 * log_alpha_bar(s)) * dlog_alpha_bar(s); });
  }
  // b = sqrt(1 - e^l): b' = -e^l l' / (2 b)
  template <class T> T db(const T& t) const {
    return math::map(t, [this](double s) {
      const double l = log_alpha_bar(s);
      return -std::exp(l) * dlog_alpha_bar(s) / (2.0 * std::sqrt(-std::expm1(l)));
    });
  }

 private:
  std::pair<int, double> locate(double t) const {
    const double tau = std::clamp(t, 0.0, 1.0) * steps();
    const int k = std::min(static_cast<int>(tau), steps() - 1);
    return {k, tau - k};
  }

  double beta_start_, beta_end_;
  std::vector<double> log_alpha_bar_;  // at integer tau = 0..N
  std::vector<double> slope_;          // log(1 - beta_j) per unit tau
};

}  // namespace diffuse::process
