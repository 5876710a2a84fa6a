#pragma once
// Sampling a pipeline's model: prompts -> conditioning -> noise -> the sampler with classifier-free
// guidance -> the autoencoder's decoder. Rectified flow is sampled as the SD3 reference does
// (state z_t, sigma = t, sampling/guidance.hpp); any other forward process through its prediction
// target (state z / a with sigma = b / a, sampling/guidance.hpp's process form), so every objective
// of the paper's comparison can be sampled from the same pipeline.
#include <array>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <torch/types.h>

#include "diffuse/pipeline/pipeline.hpp"
#include "diffuse/sampling/guidance.hpp"
#include "diffuse/sampling/initial_noise.hpp"

namespace diffuse::pipeline {

using sampling::valid_cfg_interval;

struct GenerateOptions {
  int steps = 20;
  double cfg = 4.0;
  // Guidance only where lo <= t <= hi (t = sigma for rectified flow), the plain conditional model
  // elsewhere: "guidance in a limited interval" (Kynkaenniemi et al. 2024). {0, 1}: every step.
  std::array<double, 2> cfg_interval{0.0, 1.0};
  std::uint64_t seed = 0;
  int height = 32, width = 32;
  sampling::StepCallback on_step;
};

// Returns images (B, 3, H, W) in [-1, 1].
template <class P>
torch::Tensor generate(typename P::backbone_type::module_type& model, const typename P::conditioning_type& cond,
                       const typename P::autoencoder_type& ae, const typename P::sampler_type& sampler,
                       const typename P::objective_type& objective, const std::vector<std::string>& prompts,
                       const GenerateOptions& o) {
  torch::NoGradGuard g;
  if (!valid_cfg_interval(o.cfg_interval[0], o.cfg_interval[1]))
    throw InputError("generate: the guidance interval must satisfy 0 <= lo <= hi <= 1");
  model->eval();
  const auto n = static_cast<std::int64_t>(prompts.size());
  const int f = ae.factor();
  if (o.height % (f * model->config().patch) || o.width % (f * model->config().patch))
    throw InputError("generate: image size " + std::to_string(o.width) + "x" + std::to_string(o.height) +
                     " must be a multiple of " + std::to_string(f * model->config().patch));
  const auto feats = cond.encode(prompts);
  const sampling::Conditioning c{feats.context, feats.pooled};
  const sampling::Conditioning u{torch::zeros_like(feats.context), torch::zeros_like(feats.pooled)};  // dropped: zeros, as trained
  const auto noise = sampling::initial_noise(n, ae.latent_channels(), o.height / f, o.width / f, o.seed);
  using Process = typename P::process_type;
  torch::Tensor latents;
  if constexpr (std::is_same_v<Process, process::RectifiedFlow>) {
    sampling::FlowModel fm = [&](const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y,
                                 const torch::Tensor& ctx, const std::set<int>& skip) { return model->forward(x, t, y, ctx, skip); };
    sampling::Guidance gd;
    gd.cfg_scale = o.cfg;
    if (o.cfg_interval[0] > 0 || o.cfg_interval[1] < 1)
      gd.cfg_schedule = [cfg = o.cfg, lo = o.cfg_interval[0], hi = o.cfg_interval[1]](int, double sigma) {
        return sigma >= lo && sigma <= hi ? cfg : 1.0;
      };
    const auto den = sampling::guided_flow_denoiser(fm, c, u, gd, o.steps);
    latents = sampler.sample(den, noise, o.steps, o.on_step).x;
  } else {
    // The schedule's sigmas read as times t; the state is x = z / a, sigma = b / a.
    const auto& proc = objective.process;
    using Target = typename P::objective_type::target_type;
    std::vector<double> ts = sampler.schedule.sigmas(o.steps);
    for (auto& t : ts) t = std::min(t, 1.0 - 1e-3);  // b / a is infinite at t = 1 for variance-preserving processes
    const auto sigmas = sampling::process_sigmas(proc, std::vector<double>(ts.begin(), ts.end() - 1));
    const sampling::Denoiser den = [&](const torch::Tensor& x, double sigma, int) {
      const double t = sampling::t_of_sigma(proc, sigma);
      const auto k = process::coefficients(proc, t);
      const auto z = torch::cat({x, x}) * k.a;
      const auto tt = torch::full({2 * n}, 1000.0 * t);
      const auto pred = model->forward(z, tt, torch::cat({c.pooled, u.pooled}), torch::cat({c.context, u.context}));
      const process::Coefficients<torch::Tensor> kt{torch::full_like(z, k.a), torch::full_like(z, k.b),
                                                    torch::full_like(z, k.da), torch::full_like(z, k.db)};
      const auto x0 = Target::to_x0_eps(pred, z, kt).x0;
      const auto pos = x0.narrow(0, 0, n), neg = x0.narrow(0, n, n);
      const double scale = t >= o.cfg_interval[0] && t <= o.cfg_interval[1] ? o.cfg : 1.0;
      return torch::Tensor(neg + (pos - neg) * scale);
    };
    latents = sampler.method.sample(den, noise * sigmas.front(), sigmas, o.on_step).x;
  }
  return ae.decode(latents).clamp(-1, 1);
}

}  // namespace diffuse::pipeline
