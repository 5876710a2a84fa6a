#pragma once
// Prediction targets and the conversions between them (torch-free).
//
// With z = a x0 + b eps fixed, a prediction of any target determines (x0-hat, eps-hat), so a
// sampler can ask any model for x0-hat or v-hat. For each target, `c_eps` is the factor with
// |target-hat - target| = c_eps |eps-hat - eps|, which the unified loss view needs (Kingma & Gao
// 2023; SD3 paper section 2, eq. 8).
#include <concepts>
#include <string_view>

#include "diffuse/process/process.hpp"

namespace diffuse::process {

template <class T>
struct X0Eps {
  T x0, eps;
};

// The noise: eps.
struct Eps {
  static constexpr std::string_view name = "eps";
  template <class T> static T target(const T&, const T& eps, const Coefficients<T>&) { return eps; }
  template <class T> static X0Eps<T> to_x0_eps(const T& pred, const T& z, const Coefficients<T>& c) {
    return {T((z - c.b * pred) / c.a), pred};
  }
  template <class T> static T c_eps(const Coefficients<T>& c) { return math::full_like(c.a, 1.0); }
};

// The clean sample: x0.
struct X0 {
  static constexpr std::string_view name = "x0";
  template <class T> static T target(const T& x0, const T&, const Coefficients<T>&) { return x0; }
  template <class T> static X0Eps<T> to_x0_eps(const T& pred, const T& z, const Coefficients<T>& c) {
    return {pred, T((z - c.a * pred) / c.b)};
  }
  template <class T> static T c_eps(const Coefficients<T>& c) { return T(c.b / c.a); }
};

// The velocity of the path, dz/dt = a' x0 + b' eps (= eps - x0 for rectified flow).
struct Velocity {
  static constexpr std::string_view name = "velocity";
  template <class T> static T target(const T& x0, const T& eps, const Coefficients<T>& c) {
    return T(c.da * x0 + c.db * eps);
  }
  // Solve [a b; a' b'] [x0; eps] = [z; u].
  template <class T> static X0Eps<T> to_x0_eps(const T& pred, const T& z, const Coefficients<T>& c) {
    const T det = c.a * c.db - c.b * c.da;
    return {T((c.db * z - c.b * pred) / det), T((c.a * pred - c.da * z) / det)};
  }
  template <class T> static T c_eps(const Coefficients<T>& c) { return T(c.db - c.da * c.b / c.a); }
};

// v-prediction (Salimans & Ho 2022): v = a eps - b x0, for variance-preserving processes.
struct V {
  static constexpr std::string_view name = "v";
  template <class T> static T target(const T& x0, const T& eps, const Coefficients<T>& c) {
    return T(c.a * eps - c.b * x0);
  }
  // Solve [a b; -b a] [x0; eps] = [z; v].
  template <class T> static X0Eps<T> to_x0_eps(const T& pred, const T& z, const Coefficients<T>& c) {
    const T det = c.a * c.a + c.b * c.b;
    return {T((c.a * z - c.b * pred) / det), T((c.b * z + c.a * pred) / det)};
  }
  template <class T> static T c_eps(const Coefficients<T>& c) { return T((c.a * c.a + c.b * c.b) / c.a); }
};

template <class Tg>
concept PredictionTarget = requires(double v, const Coefficients<double>& c) {
  { Tg::name } -> std::convertible_to<std::string_view>;
  { Tg::target(v, v, c) } -> std::convertible_to<double>;
  { Tg::to_x0_eps(v, v, c) } -> std::same_as<X0Eps<double>>;
  { Tg::c_eps(c) } -> std::convertible_to<double>;
};

// A prediction of `From` expressed as `To`, given the noisy input z.
template <PredictionTarget To, PredictionTarget From, class T>
T convert(const T& pred, const T& z, const Coefficients<T>& c) {
  const auto [x0, eps] = From::to_x0_eps(pred, z, c);
  return To::target(x0, eps, c);
}

}  // namespace diffuse::process
