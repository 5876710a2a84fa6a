// Parity with the SD3.5 reference's sampling trajectories (reads ../shared/testdata/sd3ref/
// sampler_{a,b,c}.io.safetensors and the mmdit_a / mmdit_c weights in place): every step's state
// and guided x0-hat, the final latent and the latent handed to the VAE, within
// max|ours - ref| <= 2e-5 x max(1, max|ref|).
#include <catch2/catch.hpp>

#include <iostream>

#include <torch/torch.h>

#include "diffuse/autoencoder/latent_format.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"
#include "diffuse/sampling/guidance.hpp"
#include "diffuse/sampling/schedule.hpp"

#ifdef DIFFUSE_TESTDATA_DIR
namespace t_sampler_parity {

using namespace diffuse;
using namespace diffuse::sampling;

double rel_err(const torch::Tensor& ours, const torch::Tensor& ref) {
  return (ours.to(torch::kFloat64) - ref.to(torch::kFloat64)).abs().max().item<double>() /
         std::max(1.0, ref.abs().max().item<double>());
}

TEST_CASE("samplers reproduce the reference trajectories step by step", "[sampling][parity]") {
  struct Case {
    const char* name;
    const char* weights;
    const char* sampler;
    int steps;
    double cfg;
    bool slg;
  };
  for (const auto& c : {Case{"sampler_a", "mmdit_a", "euler", 4, 4.5, false}, Case{"sampler_b", "mmdit_a", "dpmpp_2m", 4, 4.5, false},
                        Case{"sampler_c", "mmdit_c", "euler", 6, 4.0, true}}) {
    DYNAMIC_SECTION(c.name) {
      const std::string dir = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
      auto model = io::load_mmdit(dir + c.weights + ".weights.safetensors");
      const auto io = io::load_safetensors(dir + c.name + ".io.safetensors");
      torch::NoGradGuard g;
      const auto sigmas = ReferenceSchedule{3.0}.sigmas(c.steps);
      const auto ref_sigmas = io["sigmas"];
      for (int i = 0; i <= c.steps; ++i) CHECK(sigmas[i] == static_cast<double>(ref_sigmas[i].item<float>()));  // bit for bit
      const auto x_init = io["noise"] * sigmas[0] + io["latent_empty"] * (1 - sigmas[0]);
      CHECK(rel_err(x_init, io["x_init"]) <= 2e-5);
      Guidance guidance;
      guidance.cfg_scale = c.cfg;
      if (c.slg) {
        guidance.slg_scale = 2.5;
        guidance.skip_layers = {0};
        guidance.slg_start = 0.01;
        guidance.slg_end = 0.5;
      }
      FlowModel flow = [&](const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y,
                           const torch::Tensor& ctx, const std::set<int>& skip) { return model->forward(x, t, y, ctx, skip); };
      const auto denoiser = guided_flow_denoiser(flow, {io["cond_context"], io["cond_y"]},
                                                 {io["uncond_context"], io["uncond_y"]}, guidance, c.steps);
      double worst = 0;
      std::string per_step;
      const StepCallback check_step = [&](const StepInfo& s) {
        const auto key = "step" + std::to_string(s.step);
        const double ex = rel_err(*s.x, io[key + ".x"]), ed = rel_err(*s.denoised, io[key + ".denoised"]);
        CHECK(ex <= 2e-5);
        CHECK(ed <= 2e-5);
        worst = std::max({worst, ex, ed});
        per_step += " " + std::to_string(std::max(ex, ed));
        return true;
      };
      const SampleResult r = std::string(c.sampler) == "euler" ? Euler{}.sample(denoiser, x_init, sigmas, check_step)
                                                               : DPMPP2M{}.sample(denoiser, x_init, sigmas, check_step);
      CHECK(r.steps_run == c.steps);
      const double ef = rel_err(r.x, io["x_final"]);
      const double el = rel_err(autoencoder::SD3LatentFormat{}.process_out(r.x), io["latent_out"]);
      CHECK(ef <= 2e-5);
      CHECK(el <= 2e-5);
      std::cout << "parity " << c.name << ": per-step max relative error" << per_step << "; final " << ef << "\n";
    }
  }
}

}  // namespace t_sampler_parity
#endif
