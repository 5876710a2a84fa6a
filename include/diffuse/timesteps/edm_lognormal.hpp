#pragma once
// EDM's log-normal noise levels (Karras et al. 2022): log sigma ~ N(P_m, P_s^2), expressed as a
// rectified-flow time through sigma = t / (1 - t) (same log-SNR), i.e. t = sigma / (1 + sigma).
// Since logit(t) = log(sigma), this is exactly logit_normal(P_m, P_s): a name for training an RF
// model with EDM's noise distribution.
#include "diffuse/timesteps/logit_normal.hpp"

namespace diffuse::timesteps {

struct EDMLogNormal {
  static constexpr std::string_view name = "edm";
  double P_m = -1.2, P_s = 1.2;  // Karras et al. 2022, Table 1

  LogitNormal as_logit_normal() const { return {P_m, P_s}; }
  template <class T> T density(const T& t) const { return as_logit_normal().density(t); }
  double cdf(double t) const { return as_logit_normal().cdf(t); }
  torch::Tensor sample(std::int64_t n, at::Generator& gen) const { return as_logit_normal().sample(n, gen); }
  std::string describe() const { return "edm(" + detail::num(P_m) + "," + detail::num(P_s) + ")"; }
};

}  // namespace diffuse::timesteps
