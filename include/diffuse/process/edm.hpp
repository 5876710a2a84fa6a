#pragma once
// EDM (torch-free; Karras et al. 2022, as the SD3 paper uses it in section 3.1):
// z_t = x0 + b_t eps with b_t = sigma(t) and t ~ U(0, 1). The schedule sigma(t) is a policy:
//   LogNormalSigma: sigma = exp(P_s Phi^-1(t) + P_m), so lambda_t ~ N(-2 P_m, (2 P_s)^2)  ("edm")
//   RFSigma:        sigma = t / (1 - t), the log-SNR of rectified flow                  ("edm/rf")
//   CosineSigma:    sigma = tan(pi t / 2), the log-SNR of the cosine schedule           ("edm/cos")
// sigma_data = 0.5 is EDM's data standard deviation, read by weighting::EDM.
#include <cmath>
#include <limits>
#include <string_view>

#include <boost/math/special_functions/erf.hpp>

#include "diffuse/process/process.hpp"
#include "diffuse/process/target.hpp"

namespace diffuse::process {

namespace edm {

// Phi^-1(t) = -sqrt(2) erfc^-1(2 t), with Phi^-1(0) = -inf and Phi^-1(1) = +inf.
inline double normal_quantile(double t) {
  if (t <= 0.0) return -std::numeric_limits<double>::infinity();
  if (t >= 1.0) return std::numeric_limits<double>::infinity();
  return -std::sqrt(2.0) * boost::math::erfc_inv(2.0 * t);
}
inline double normal_pdf(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2.0 * math::pi); }

struct LogNormalSigma {
  static constexpr std::string_view name = "lognormal";
  double P_m = -1.2, P_s = 1.2;  // EDM's defaults (Karras et al. 2022, Table 1)
  double sigma(double t) const { return std::exp(P_s * normal_quantile(t) + P_m); }
  double dsigma(double t) const {
    if (t <= 0.0 || t >= 1.0) return std::numeric_limits<double>::infinity();  // sigma' grows like e^(z^2/2)
    const double z = normal_quantile(t);
    return std::exp(P_s * z + P_m) * P_s / normal_pdf(z);
  }
};

struct RFSigma {
  static constexpr std::string_view name = "rf";
  double sigma(double t) const { return t / (1.0 - t); }
  double dsigma(double t) const { return 1.0 / ((1.0 - t) * (1.0 - t)); }
};

struct CosineSigma {
  static constexpr std::string_view name = "cos";
  double sigma(double t) const { return std::tan(0.5 * math::pi * t); }
  double dsigma(double t) const {
    const double c = std::cos(0.5 * math::pi * t);
    return 0.5 * math::pi / (c * c);
  }
};

}  // namespace edm

template <class Schedule = edm::LogNormalSigma>
struct EDM {
  static constexpr std::string_view name = "edm";
  static constexpr bool variance_preserving = false;
  using default_target = X0;

  Schedule schedule{};
  double sigma_data = 0.5;  // Karras et al. 2022, section 5

  template <class T> T a(const T& t) const { return math::full_like(t, 1.0); }
  template <class T> T b(const T& t) const {
    return math::map(t, [this](double s) { return schedule.sigma(s); });
  }
  template <class T> T da(const T& t) const { return math::full_like(t, 0.0); }
  template <class T> T db(const T& t) const {
    return math::map(t, [this](double s) { return schedule.dsigma(s); });
  }
};

}  // namespace diffuse::process
