#pragma once
// ODE and SDE samplers sharing one signature (k-diffusion's convention, as the SD3.5 reference
// uses it): a denoiser D(x, sigma, step) -> x0-hat, an initial x, and a sigma list ending in 0.
// The state obeys dx/dsigma = (x - x0-hat) / sigma: for rectified flow that is the velocity with
// sigma = t and x = z_t (SD3_FACTS (d) 14); any other process is sampled in this form through
// sampling/denoiser.hpp (x = z / a, sigma = b / a).
//
// Every sampler reports the path length sum_i ||x_{i+1} - x_i|| (the SD3 paper's scaling table
// measures it) and the straightness ||x_N - x_0|| / path length (1 for a straight path), per
// sample, and calls `on_step` after every step; returning false stops the run.
#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "diffuse/core/error.hpp"

namespace diffuse::sampling {

using Denoiser = std::function<torch::Tensor(const torch::Tensor& x, double sigma, int step)>;

struct StepInfo {
  int step = 0, steps = 0;
  double sigma = 0, sigma_next = 0;
  const torch::Tensor* x = nullptr;         // the state entering the step
  const torch::Tensor* denoised = nullptr;  // the denoiser's x0-hat at this step
};
using StepCallback = std::function<bool(const StepInfo&)>;

struct SampleResult {
  torch::Tensor x;             // the final state
  torch::Tensor path_length;   // (B) sum of ||x_{i+1} - x_i|| over the steps run
  torch::Tensor straightness;  // (B) ||x_last - x_first|| / path length
  int steps_run = 0;
  int model_calls = 0;
  bool stopped = false;        // the callback asked to stop
};

namespace detail {

inline torch::Tensor per_sample_norm(const torch::Tensor& d) {
  return d.flatten(1).to(torch::kFloat64).norm(2, 1);
}

// Shared bookkeeping: steps, callbacks, the path.
class Run {
 public:
  Run(const torch::Tensor& x0, const std::vector<double>& sigmas, StepCallback cb)
      : first_(x0), sigmas_(sigmas), cb_(std::move(cb)) {
    if (sigmas.size() < 2) throw InputError("sampling: need at least two sigmas (one step)");
    result_.path_length = torch::zeros({x0.size(0)}, torch::TensorOptions().dtype(torch::kFloat64).device(x0.device()));
  }
  int steps() const { return static_cast<int>(sigmas_.size()) - 1; }
  double sigma(int i) const { return sigmas_[static_cast<std::size_t>(i)]; }
  // Records the move from `x` to `next`; false when the callback stops the run.
  bool advance(int i, const torch::Tensor& x, const torch::Tensor& next, const torch::Tensor& denoised) {
    result_.path_length += per_sample_norm(next - x);
    result_.steps_run = i + 1;
    if (cb_) {
      StepInfo info{i, steps(), sigma(i), sigma(i + 1), &x, &denoised};
      if (!cb_(info)) {
        result_.stopped = true;
        return false;
      }
    }
    return true;
  }
  SampleResult finish(torch::Tensor x, int calls) {
    result_.straightness = per_sample_norm(x - first_) / result_.path_length.clamp_min(1e-300);
    result_.x = std::move(x);
    result_.model_calls = calls;
    return result_;
  }

 private:
  torch::Tensor first_;
  const std::vector<double>& sigmas_;
  StepCallback cb_;
  SampleResult result_;
};

// The loop every sampler shares: one denoiser call per step, then `step(i, x, denoised, sigma,
// sigma_next)` gives the next state (and may call the model again through `calls`).
template <class Step>
SampleResult run_steps(const Denoiser& model, torch::Tensor x, const std::vector<double>& sigmas,
                       const StepCallback& on_step, Step&& step) {
  Run run(x, sigmas, on_step);
  int calls = 0;
  for (int i = 0; i < run.steps(); ++i) {
    const double s = run.sigma(i), sn = run.sigma(i + 1);
    const auto denoised = model(x, s, i);
    ++calls;
    auto next = step(i, x, denoised, s, sn, calls);
    const bool go = run.advance(i, x, next, denoised);
    x = std::move(next);
    if (!go) break;
  }
  return run.finish(std::move(x), calls);
}

}  // namespace detail

// Euler (the SD3 paper's sampler): x <- x + (sigma_next - sigma) (x - x0-hat) / sigma.
struct Euler {
  static constexpr const char* name = "euler";
  SampleResult sample(const Denoiser& model, torch::Tensor x, const std::vector<double>& sigmas,
                      const StepCallback& on_step = {}) const {
    return detail::run_steps(model, std::move(x), sigmas, on_step,
                             [](int, const torch::Tensor& x, const torch::Tensor& denoised, double s, double sn, int&) {
                               return x + (x - denoised) / s * (sn - s);
                             });
  }
};

// Heun (Karras et al. 2022, Alg. 1): Euler predictor, trapezoidal corrector; Euler on the last
// step to sigma = 0.
struct Heun {
  static constexpr const char* name = "heun";
  SampleResult sample(const Denoiser& model, torch::Tensor x, const std::vector<double>& sigmas,
                      const StepCallback& on_step = {}) const {
    return detail::run_steps(model, std::move(x), sigmas, on_step,
                             [&](int i, const torch::Tensor& x, const torch::Tensor& denoised, double s, double sn, int& calls) {
                               const auto d = (x - denoised) / s;
                               auto next = x + d * (sn - s);
                               if (sn > 0) {
                                 const auto d2 = (next - model(next, sn, i)) / sn;
                                 ++calls;
                                 next = x + (d + d2) * (0.5 * (sn - s));
                               }
                               return next;
                             });
  }
};

// DPM-Solver++(2M) (Lu et al. 2022) on x0-hat with t = -log(sigma), exactly as k-diffusion and the
// SD3.5 reference apply it to the flow model (its default sampler).
struct DPMPP2M {
  static constexpr const char* name = "dpmpp_2m";
  SampleResult sample(const Denoiser& model, torch::Tensor x, const std::vector<double>& sigmas,
                      const StepCallback& on_step = {}) const {
    auto t_of = [](double s) { return -std::log(s); };
    torch::Tensor old_denoised;
    return detail::run_steps(model, std::move(x), sigmas, on_step,
                             [&](int i, const torch::Tensor& x, const torch::Tensor& denoised, double s, double sn, int&) {
                               torch::Tensor next;
                               if (sn == 0) {
                                 next = denoised;  // h = inf: sigma_fn(t_next) / sigma_fn(t) = 0, -expm1(-h) = 1
                               } else {
                                 const double t = t_of(s), tn = t_of(sn), h = tn - t;
                                 torch::Tensor d = denoised;
                                 if (old_denoised.defined()) {
                                   const double r = (t - t_of(sigmas[static_cast<std::size_t>(i) - 1])) / h;
                                   d = denoised * (1 + 1 / (2 * r)) - old_denoised * (1 / (2 * r));
                                 }
                                 next = x * (sn / s) - d * std::expm1(-h);
                               }
                               old_denoised = denoised;
                               return next;
                             });
  }
};

// A stochastic sampler for rectified flow: each step writes x_next = (1 - s') x0-hat + s' e with
// e = sqrt(1 - eta^2) eps-hat + eta xi, xi ~ N(0, I) from a seeded generator, where
// eps-hat = (x - (1 - s) x0-hat) / s. eta = 0 is exactly Euler; eta = 1 re-noises fully.
struct StochasticRF {
  static constexpr const char* name = "euler_stochastic";
  double eta = 1.0;
  std::uint64_t seed = 0;
  SampleResult sample(const Denoiser& model, torch::Tensor x, const std::vector<double>& sigmas,
                      const StepCallback& on_step = {}) const {
    if (!(eta >= 0 && eta <= 1)) throw InputError("sampling: eta must be in [0, 1]");
    auto gen = at::detail::createCPUGenerator(seed);
    return detail::run_steps(model, std::move(x), sigmas, on_step,
                             [&](int, const torch::Tensor& x, const torch::Tensor& denoised, double s, double sn, int&) {
                               const auto eps = (x - denoised * (1 - s)) / s;
                               torch::Tensor e = eps;
                               if (eta > 0 && sn > 0) {
                                 const auto xi = torch::randn(x.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32)).to(x.options());
                                 e = eps * std::sqrt(1 - eta * eta) + xi * eta;
                               }
                               return torch::Tensor(denoised * (1 - sn) + e * sn);
                             });
  }
};

template <class S>
concept Sampler = requires(const S& s, const Denoiser& d, torch::Tensor x, const std::vector<double>& sig) {
  { s.sample(d, x, sig) } -> std::same_as<SampleResult>;
  { S::name };
};

// Runs the sampler named on a command line: euler, heun, dpmpp_2m or euler_stochastic (eta, seed).
inline SampleResult sample_by_name(const std::string& name, const Denoiser& model, torch::Tensor x,
                                   const std::vector<double>& sigmas, const StepCallback& on_step = {}, double eta = 1.0,
                                   std::uint64_t seed = 0) {
  if (name == Euler::name) return Euler{}.sample(model, std::move(x), sigmas, on_step);
  if (name == Heun::name) return Heun{}.sample(model, std::move(x), sigmas, on_step);
  if (name == DPMPP2M::name) return DPMPP2M{}.sample(model, std::move(x), sigmas, on_step);
  if (name == StochasticRF::name) return StochasticRF{eta, seed}.sample(model, std::move(x), sigmas, on_step);
  throw InputError("sampler must be euler, heun, dpmpp_2m or euler_stochastic, got '" + name + "'");
}

}  // namespace diffuse::sampling
