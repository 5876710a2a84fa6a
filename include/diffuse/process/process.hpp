#pragma once
// The forward-process concept and what every process derives from a_t and b_t (torch-free).
//
// A forward process is z_t = a_t x0 + b_t eps, t in [0, 1] (SD3 paper, section 2). A policy
// provides a, b and their t-derivatives da, db, each templated on the value type; the log-SNR
// lambda_t = log(a_t^2 / b_t^2) and its derivative follow here, once for all processes.
#include <concepts>
#include <string_view>

#include "diffuse/core/value.hpp"

namespace diffuse::process {

template <class P>
concept ForwardProcess = requires(const P& p, double t) {
  { P::name } -> std::convertible_to<std::string_view>;
  { p.a(t) } -> std::convertible_to<double>;
  { p.b(t) } -> std::convertible_to<double>;
  { p.da(t) } -> std::convertible_to<double>;
  { p.db(t) } -> std::convertible_to<double>;
  typename P::default_target;
  { P::variance_preserving } -> std::convertible_to<bool>;
};

// a, b and their derivatives at t: what targets and weightings are computed from.
template <class T>
struct Coefficients {
  T a, b, da, db;
};

template <ForwardProcess P, class T>
Coefficients<T> coefficients(const P& p, const T& t) {
  return {p.a(t), p.b(t), p.da(t), p.db(t)};
}

// lambda_t = log(a^2 / b^2) = 2 (log a - log b)
template <ForwardProcess P, class T>
T log_snr(const P& p, const T& t) {
  return T(2.0 * (math::log(p.a(t)) - math::log(p.b(t))));
}

// lambda'_t = 2 (a'/a - b'/b)
template <ForwardProcess P, class T>
T dlog_snr(const P& p, const T& t) {
  return T(2.0 * (p.da(t) / p.a(t) - p.db(t) / p.b(t)));
}

// z_t = a_t x0 + b_t eps; a and b must broadcast against x0 (e.g. shape (B, 1, 1, 1)).
template <class T>
T noisy(const Coefficients<T>& c, const T& x0, const T& eps) {
  return T(c.a * x0 + c.b * eps);
}

}  // namespace diffuse::process
