// `diffuse denoise`: tensor-level sampling with an MM-DiT, CFG and skip-layer guidance. The inputs
// are named as in the reference test vectors (noise, cond_context, cond_y, uncond_context, uncond_y,
// optional latent_empty); the output holds x_final, latent_out (through the SD3 latent format) and
// sigmas, and with --trajectory every step's x, sigma and denoised.
#include <iostream>
#include <memory>
#include <set>
#include <string>

#include "command.hpp"
#include "inputs.hpp"
#include "progress.hpp"
#include "diffuse/autoencoder/latent_format.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"
#include "diffuse/sampling/guidance.hpp"
#include "diffuse/sampling/schedule.hpp"

namespace diffuse::cli {
namespace {

struct DenoiseOptions {
  std::string weights, inputs, out, sampler = "euler", schedule = "reference", dtype = "f32", weight_layout = "auto";
  int steps = 28, threads = 0;
  double cfg = 5.0, shift = 3.0, eta = 1.0;
  double slg_scale = 0.0, slg_start = 0.01, slg_end = 0.2;
  std::vector<int> skip_layers;
  std::uint64_t seed = 0;
  bool trajectory = false;
};

std::vector<double> make_sigmas(const DenoiseOptions& o, std::int64_t image_tokens) {
  if (o.schedule == "reference") return sampling::ReferenceSchedule{o.shift}.sigmas(o.steps);
  if (o.schedule == "linear") return sampling::ShiftedLinear{o.shift}.sigmas(o.steps);
  if (o.schedule == "sdcpp") return sampling::SdCppSchedule{o.shift}.sigmas(o.steps);
  if (o.schedule == "dynamic") return sampling::DynamicShift{static_cast<double>(image_tokens)}.sigmas(o.steps);
  throw InputError("--schedule must be reference, linear, sdcpp or dynamic, got '" + o.schedule + "'");
}

void run_denoise(const DenoiseOptions& o) {
  configure_threads(o.threads);
  torch::ScalarType dtype = torch::kFloat32;
  if (o.dtype == "bf16") dtype = torch::kBFloat16;
  else if (o.dtype != "f32") throw InputError("--dtype must be f32 or bf16, got '" + o.dtype + "'");
  if (o.steps < 1) throw InputError("--steps must be at least 1");
  io::MMDiTLoadOptions lo;
  lo.dtype = dtype;
  lo.weight_layout = parse_weight_layout(o.weight_layout);
  auto model = io::load_mmdit(o.weights, lo);
  const auto in = io::load_safetensors(o.inputs);
  const auto noise = need_tensor(in, "noise", o.inputs).to(torch::kFloat32);
  const auto* empty = in.find("latent_empty");
  const auto latent_empty = empty ? empty->to(torch::kFloat32) : torch::zeros_like(noise);
  const auto p = model->config().patch;
  const auto sigmas = make_sigmas(o, (noise.size(2) / p) * (noise.size(3) / p));
  const sampling::Conditioning cond{need_tensor(in, "cond_context", o.inputs), need_tensor(in, "cond_y", o.inputs)};
  sampling::Conditioning uncond = cond;
  if (o.cfg != 1.0) uncond = {need_tensor(in, "uncond_context", o.inputs), need_tensor(in, "uncond_y", o.inputs)};
  sampling::Guidance g;
  g.cfg_scale = o.cfg;
  g.slg_scale = o.slg_scale;
  g.skip_layers = std::set<int>(o.skip_layers.begin(), o.skip_layers.end());
  g.slg_start = o.slg_start;
  g.slg_end = o.slg_end;
  for (int l : g.skip_layers)
    if (l < 0 || l >= model->config().depth)
      throw InputError("--skip-layers: block " + std::to_string(l) + " does not exist (depth " +
                       std::to_string(model->config().depth) + ")");
  sampling::FlowModel flow = [&](const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y,
                                 const torch::Tensor& ctx, const std::set<int>& skip) {
    return model->forward(x.to(dtype), t, y.to(dtype), ctx.to(dtype), skip).to(torch::kFloat32);
  };
  const auto denoiser = sampling::guided_flow_denoiser(flow, cond, uncond, g, o.steps);
  const auto x_init = noise * sigmas[0] + latent_empty * (1 - sigmas[0]);

  std::vector<std::pair<std::string, torch::Tensor>> out;
  Progress progress("denoise", o.steps);
  const sampling::StepCallback cb = [&](const sampling::StepInfo& s) {
    if (o.trajectory) {
      const auto key = "step" + std::to_string(s.step);
      out.emplace_back(key + ".x", s.x->clone());
      out.emplace_back(key + ".sigma", torch::tensor({static_cast<float>(s.sigma)}));
      out.emplace_back(key + ".denoised", s.denoised->clone());
    }
    progress.update(s.step + 1, "sigma " + std::to_string(s.sigma));
    return true;
  };
  torch::NoGradGuard no_grad;
  const auto r = sampling::sample_by_name(o.sampler, denoiser, x_init, sigmas, cb, o.eta, o.seed);
  out.emplace_back("sigmas", torch::tensor(sigmas, torch::kFloat32));
  out.emplace_back("x_init", x_init);
  out.emplace_back("x_final", r.x);
  out.emplace_back("latent_out", autoencoder::SD3LatentFormat{}.process_out(r.x));
  out.emplace_back("path_length", r.path_length.to(torch::kFloat32));
  out.emplace_back("straightness", r.straightness.to(torch::kFloat32));
  io::save_safetensors(o.out, out, {{"sampler", o.sampler}, {"schedule", o.schedule}, {"steps", std::to_string(o.steps)},
                                    {"cfg", std::to_string(o.cfg)}, {"shift", std::to_string(o.shift)}});
  std::cerr << "path length " << r.path_length.mean().item<double>() << ", straightness "
            << r.straightness.mean().item<double>() << ", " << r.model_calls << " model calls; wrote " << o.out << "\n";
}

}  // namespace

void add_denoise(CLI::App& app) {
  auto* cmd = app.add_subcommand("denoise", "Sample latents with an MM-DiT from given noise and conditioning tensors");
  auto o = std::make_shared<DenoiseOptions>();
  cmd->add_option("--weights", o->weights, "MM-DiT weights (.safetensors)")->required();
  cmd->add_option("--inputs", o->inputs, "noise, cond_context, cond_y, uncond_context, uncond_y [, latent_empty]")->required();
  cmd->add_option("--out", o->out, "output .safetensors (x_final, latent_out, sigmas, ...)")->required();
  cmd->add_option("--steps", o->steps, "sampling steps")->capture_default_str();
  cmd->add_option("--cfg", o->cfg, "classifier-free guidance scale (1: conditional only)")->capture_default_str();
  cmd->add_option("--shift", o->shift, "schedule shift")->capture_default_str();
  cmd->add_option("--sampler", o->sampler, "euler, heun, dpmpp_2m or euler_stochastic")->capture_default_str();
  cmd->add_option("--schedule", o->schedule, "reference, linear, sdcpp or dynamic")->capture_default_str();
  cmd->add_option("--eta", o->eta, "noise of euler_stochastic (0: Euler)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of euler_stochastic")->capture_default_str();
  cmd->add_option("--slg-scale", o->slg_scale, "skip-layer guidance scale (0: off)")->capture_default_str();
  cmd->add_option("--skip-layers", o->skip_layers, "blocks skipped by SLG, e.g. 7,8,9")->delimiter(',');
  cmd->add_option("--skip-layer-start", o->slg_start, "SLG active from this fraction of the steps")->capture_default_str();
  cmd->add_option("--skip-layer-end", o->slg_end, "SLG active until this fraction of the steps")->capture_default_str();
  cmd->add_flag("--trajectory", o->trajectory, "also write step{i}.x, step{i}.sigma, step{i}.denoised");
  cmd->add_option("--dtype", o->dtype, "f32 or bf16")->capture_default_str();
  cmd->add_option("--weight-layout", o->weight_layout, weight_layout_help)->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0: all)")->capture_default_str();
  cmd->callback([o] { run_denoise(*o); });
}

}  // namespace diffuse::cli
