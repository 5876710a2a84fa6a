#pragma once
// Loss weightings (torch-free): the explicit weight omega(t) on a target's squared error,
// L = E_{t ~ pi}[omega(t) ||target-hat - target||^2].
//
// In the unified view of Kingma & Gao (2023) that the SD3 paper adopts (section 2, eq. 8),
// L_w = -1/2 E_{t ~ U(0,1)}[w_t lambda'_t ||eps-hat - eps||^2], and an objective
// (process, target, distribution pi, omega) has the effective weighting
//     w_t = -2 pi(t) omega(t) c(t)^2 / lambda'_t,
// where c is the target's error factor (process/target.hpp). training/objective.hpp reports it.
#include <concepts>
#include <string_view>

#include "diffuse/process/edm.hpp"
#include "diffuse/process/process.hpp"

namespace diffuse::weighting {

// omega(t) = 1: the plain MSE on the target (all of the SD3 paper's variants but EDM).
struct Uniform {
  static constexpr std::string_view name = "uniform";
  template <class P, class T> T omega(const P&, const T& t) const { return math::full_like(t, 1.0); }
};

// EDM's loss weight on the x0 error (Karras et al. 2022, eq. 8 / Table 1):
// omega = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, sigma = b / a, sigma_data from the process.
struct EDM {
  static constexpr std::string_view name = "edm";
  template <class P, class T> T omega(const P& p, const T& t) const {
    const T sigma = T(p.b(t) / p.a(t));
    const double sd2 = p.sigma_data * p.sigma_data;
    return T((sigma * sigma + sd2) / (sigma * sigma * sd2));
  }
};

template <class W, class P>
concept LossWeightingFor = requires(const W& w, const P& p, double t) {
  { W::name } -> std::convertible_to<std::string_view>;
  { w.omega(p, t) } -> std::convertible_to<double>;
};

}  // namespace diffuse::weighting
