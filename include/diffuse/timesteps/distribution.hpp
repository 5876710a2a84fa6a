#pragma once
// The training-time timestep distribution concept (SD3 paper section 3.1, "tailored SNR
// samplers"): every distribution has a density pi(t) on (0, 1) templated on the value type, a
// CDF (double; used by tests and analysis) and a seeded sampler returning float64 t of shape (n).
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "diffuse/core/value.hpp"
#include "diffuse/core/value_torch.hpp"

namespace diffuse::timesteps {

template <class D>
concept TimestepDistribution = requires(const D& d, double t, std::int64_t n, at::Generator& gen) {
  { D::name } -> std::convertible_to<std::string_view>;
  { d.density(t) } -> std::convertible_to<double>;
  { d.cdf(t) } -> std::convertible_to<double>;
  { d.sample(n, gen) } -> std::same_as<torch::Tensor>;
  { d.describe() } -> std::convertible_to<std::string>;
};

namespace detail {
inline torch::Tensor uniform01(std::int64_t n, at::Generator& gen) {
  return torch::rand({n}, gen, torch::TensorOptions().dtype(torch::kFloat64));
}
inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
}  // namespace detail

}  // namespace diffuse::timesteps
