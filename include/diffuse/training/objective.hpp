#pragma once
// The training objective: process x timestep distribution x loss weighting x prediction target
// (SD3 paper section 2). Given a backbone output, x0, noise and t it returns the per-sample loss,
// differentiable through the output. It also reports the effective weighting w_t of the unified
// view (weighting/weighting.hpp), which is how the paper compares its variants.
//
//   using SD3Objective = Objective<process::RectifiedFlow, timesteps::LogitNormal, weighting::Uniform>;
#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "diffuse/core/value_torch.hpp"
#include "diffuse/process/process.hpp"
#include "diffuse/process/target.hpp"
#include "diffuse/training/objective_rules.hpp"

namespace diffuse::training {

template <class Process, class Timesteps, class Weighting, class Target = typename Process::default_target>
struct Objective {
  static_assert(check_objective<Process, Timesteps, Weighting, Target>());
  using process_type = Process;
  using timesteps_type = Timesteps;
  using weighting_type = Weighting;
  using target_type = Target;

  Process process{};
  Timesteps timesteps{};
  Weighting weighting{};

  // t ~ pi, shape (n), in the dtype and device of `like`.
  torch::Tensor sample_t(std::int64_t n, at::Generator& gen, const torch::Tensor& like) const {
    return timesteps.sample(n, gen).to(like.device(), like.scalar_type());
  }

  // Coefficients for a batch: t of shape (B) becomes (B, 1, ..., 1) to broadcast against x0.
  process::Coefficients<torch::Tensor> coefficients(const torch::Tensor& t, const torch::Tensor& x0) const {
    std::vector<std::int64_t> shape(static_cast<std::size_t>(x0.dim()), 1);
    shape[0] = t.size(0);
    return process::coefficients(process, t.reshape(shape));
  }

  struct Inputs {
    torch::Tensor z;       // z_t = a x0 + b eps, the backbone's input, (B, ...)
    torch::Tensor target;  // what the backbone should output, (B, ...)
  };
  Inputs inputs(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& t) const {
    const auto c = coefficients(t, x0);
    return {process::noisy(c, x0, noise), Target::target(x0, noise, c)};
  }

  // Per-sample loss, shape (B): omega(t) * mean over non-batch dims of (output - target)^2.
  torch::Tensor loss(const torch::Tensor& output, const torch::Tensor& x0, const torch::Tensor& noise,
                     const torch::Tensor& t) const {
    const auto target = Target::target(x0, noise, coefficients(t, x0));  // z_t is not needed here
    std::vector<std::int64_t> dims;
    for (std::int64_t d = 1; d < output.dim(); ++d) dims.push_back(d);
    const auto mse = (output - target).pow(2).mean(dims);
    return weighting.omega(process, t.to(mse.scalar_type())) * mse;
  }

  // w_t = -2 pi(t) omega(t) c(t)^2 / lambda'_t (Kingma & Gao 2023, as in SD3 eq. 8).
  double effective_weight(double t) const {
    const auto c = process::coefficients(process, t);
    const double ce = Target::c_eps(c);
    return -2.0 * timesteps.density(t) * weighting.omega(process, t) * ce * ce / process::dlog_snr(process, t);
  }
};

}  // namespace diffuse::training
