#pragma once
// Denoisers for the samplers: the SD3 rectified-flow model with classifier-free guidance and
// skip-layer guidance (SD3_FACTS (d) 15; the SD3.5 reference's CFGDenoiser and
// SkipLayerCFGDenoiser), img2img start points, and an adapter that samples any forward process
// through its prediction target.
#include <cmath>
#include <functional>
#include <set>
#include <vector>

#include <torch/types.h>

#include "diffuse/core/error.hpp"
#include "diffuse/core/value_torch.hpp"
#include "diffuse/process/process.hpp"
#include "diffuse/process/target.hpp"
#include "diffuse/sampling/sampler.hpp"

namespace diffuse::sampling {

// A guidance interval [lo, hi] of t (pipeline::GenerateOptions::cfg_interval): 0 <= lo <= hi <= 1.
inline bool valid_cfg_interval(double lo, double hi) { return lo >= 0 && lo <= hi && hi <= 1; }

// The velocity model as the MM-DiT is called: (x, timestep = 1000 sigma, y, context, skipped blocks) -> v.
using FlowModel = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& timestep,
                                              const torch::Tensor& y, const torch::Tensor& context,
                                              const std::set<int>& skip_layers)>;

// What the MM-DiT is conditioned on: context (B, L, C) and the pooled vector y (B, P).
struct Conditioning {
  torch::Tensor context, pooled;
};

struct Guidance {
  double cfg_scale = 1.0;
  // Optional per-step scale (step, sigma) -> scale; overrides cfg_scale when set.
  std::function<double(int, double)> cfg_schedule;
  // Skip-layer guidance (SD3.5-medium: scale 2.5, layers 7, 8, 9, start 0.01, end 0.2): adds
  // slg_scale (cond - cond_with_layers_skipped) at steps with start N < i < end N.
  double slg_scale = 0.0;
  std::set<int> skip_layers;
  double slg_start = 0.01, slg_end = 0.2;
};

// Rectified-flow denoiser x0-hat = x - sigma v, with CFG (cond and uncond batched in one forward,
// cond first as in the reference) and SLG. `steps` is the schedule length N, for the SLG window.
inline Denoiser guided_flow_denoiser(FlowModel model, Conditioning cond, Conditioning uncond, Guidance g, int steps) {
  if (cond.context.size(0) != uncond.context.size(0) || cond.context.size(1) != uncond.context.size(1))
    throw InputError("guidance: cond and uncond context must have the same batch and length (pad the shorter)");
  return [=](const torch::Tensor& x, double sigma, int step) {
    const double scale = g.cfg_schedule ? g.cfg_schedule(step, sigma) : g.cfg_scale;
    const auto b = x.size(0);
    const auto t = torch::full({b}, 1000.0 * sigma, torch::TensorOptions().dtype(torch::kFloat32).device(x.device()));
    torch::Tensor pos;
    torch::Tensor guided;
    if (scale == 1.0) {  // plain conditional model: skip the unconditional half
      pos = x - model(x, t, cond.pooled, cond.context, {}) * sigma;
      guided = pos;
    } else {
      const auto x2 = torch::cat({x, x});
      const auto out = model(x2, torch::cat({t, t}), torch::cat({cond.pooled, uncond.pooled}),
                             torch::cat({cond.context, uncond.context}), {});
      const auto denoised = x2 - out * sigma;
      pos = denoised.narrow(0, 0, b);
      const auto neg = denoised.narrow(0, b, b);
      guided = neg + (pos - neg) * scale;
    }
    if (g.slg_scale > 0 && !g.skip_layers.empty() && step > g.slg_start * steps && step < g.slg_end * steps) {
      const auto skipped = x - model(x, t, cond.pooled, cond.context, g.skip_layers) * sigma;
      guided = guided + (pos - skipped) * g.slg_scale;
    }
    return guided;
  };
}

// img2img (SD3_FACTS (d) 14): the schedule starts at index floor(N (1 - strength)), from
// x = sigma noise + (1 - sigma) latent. Returns the remaining sigmas and the start state.
struct Img2ImgStart {
  std::vector<double> sigmas;
  torch::Tensor x;
};
inline Img2ImgStart img2img_start(const std::vector<double>& sigmas, const torch::Tensor& latent,
                                  const torch::Tensor& noise, double strength) {
  if (!(strength > 0 && strength <= 1)) throw InputError("img2img: strength must be in (0, 1]");
  const int n = static_cast<int>(sigmas.size()) - 1;
  const int start = std::min(n - 1, static_cast<int>(std::floor(n * (1.0 - strength))));
  std::vector<double> rest(sigmas.begin() + start, sigmas.end());
  const double s = rest.front();
  return {rest, noise * s + latent * (1.0 - s)};
}

// Sampling any forward process (process/) with the samplers above: the state is x = z / a with
// sigma = b / a (where dx/dsigma = (x - x0) / sigma holds for every process), the model sees
// z = a x at the t with b(t) / a(t) = sigma, and its prediction of `Target` is converted to x0.
template <process::ForwardProcess P>
double t_of_sigma(const P& p, double sigma) {
  double lo = 0.0, hi = 1.0;  // b / a increases with t
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (p.b(mid) / p.a(mid) < sigma ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

template <process::ForwardProcess P>
std::vector<double> process_sigmas(const P& p, const std::vector<double>& t_grid) {
  std::vector<double> out;
  for (double t : t_grid) out.push_back(p.b(t) / p.a(t));
  if (out.back() != 0.0) out.push_back(0.0);
  return out;
}

// model(z, t) predicts Target for the process P.
template <process::PredictionTarget Target, process::ForwardProcess P>
Denoiser process_denoiser(P p, std::function<torch::Tensor(const torch::Tensor& z, double t)> model) {
  return [p, model](const torch::Tensor& x, double sigma, int) {
    const double t = t_of_sigma(p, sigma);
    const auto c = process::coefficients(p, t);
    const torch::Tensor z = x * c.a;
    const auto pred = model(z, t);
    const process::Coefficients<torch::Tensor> ct{torch::full_like(z, c.a), torch::full_like(z, c.b),
                                                  torch::full_like(z, c.da), torch::full_like(z, c.db)};
    return Target::to_x0_eps(pred, z, ct).x0;
  };
}

}  // namespace diffuse::sampling
