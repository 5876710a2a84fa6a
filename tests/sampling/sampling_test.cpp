// Schedules, samplers and guidance on problems with known answers: a Gaussian-to-Gaussian flow
// (convergence orders), a single data point (one Euler step suffices, the path is straight),
// CFG/SLG against hand-combined outputs, and sampling other processes through their targets.
#include <catch2/catch.hpp>

#include <cmath>

#include <boost/hana/type.hpp>
#include <torch/torch.h>

#include "diffuse/process/cosine.hpp"
#include "diffuse/process/rectified_flow.hpp"
#include "diffuse/sampling/guidance.hpp"
#include "diffuse/sampling/sampler.hpp"
#include "diffuse/sampling/schedule.hpp"

namespace t_sampling {

using namespace diffuse;
using namespace diffuse::sampling;
using Catch::Matchers::Contains;

TEST_CASE("the reference schedule's sigmas are the reference's float32 values, bit for bit", "[sampling]") {
  // Printed from the SD3.5 reference (fbf8f48: SD3Inferencer.get_sigmas(ModelSamplingDiscreteFlow(shift), n))
  // under Debian's python3-torch 1.13: its sigmas are float32, and so the timesteps 1000 sigma.
  const std::vector<float> shift3_n10 = {1.0f, 0.9601292610168457f, 0.913348913192749f, 0.8576923608779907f,
                                         0.790368378162384f, 0.7072784900665283f, 0.602150559425354f, 0.4648760259151459f,
                                         0.2780487835407257f, 0.008928571827709675f, 0.0f};
  const std::vector<float> shift1_n4 = {1.0f, 0.6669999957084656f, 0.33399999141693115f, 0.0010000000474974513f, 0.0f};
  for (const auto& [shift, expect] : {std::pair{3.0, shift3_n10}, std::pair{1.0, shift1_n4}}) {
    const auto s = ReferenceSchedule{shift}.sigmas(static_cast<int>(expect.size()) - 1);
    REQUIRE(s.size() == expect.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
      INFO("shift " << shift << ", sigma " << i);
      CHECK(s[i] == static_cast<double>(expect[i]));  // exactly, not approximately
    }
  }
}

TEST_CASE("the reference schedule applies the shift as the SD3.5 reference does", "[sampling]") {
  const auto s = ReferenceSchedule{3.0}.sigmas(4);
  const std::vector<double> expect = {1.0, 0.8577, 0.6022, 0.0089, 0.0};  // testdata README
  REQUIRE(s.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(s[i] == Approx(expect[i]).margin(1e-4));
  const auto s28 = ReferenceSchedule{3.0}.sigmas(28);
  CHECK(s28[27] == Approx(0.0089).margin(1e-4));  // shift applied twice at the low end
  CHECK(ShiftedLinear{3.0}.sigmas(28)[27] == Approx(0.1).margin(1e-4));  // f_3(1/28), the large final jump
  CHECK(SdCppSchedule{3.0}.sigmas(28)[27] == Approx(0.003).margin(1e-4));
  CHECK(DynamicShift{256}.mu() == Approx(0.5));
  CHECK(DynamicShift{4096}.mu() == Approx(1.15));
  const auto d = DynamicShift{4096}.sigmas(10);
  CHECK(d.front() == 1.0);
  CHECK(d.back() == 0.0);
  for (std::size_t i = 1; i < d.size(); ++i) CHECK(d[i] < d[i - 1]);
  CHECK(CustomSigmas{{1.0, 0.5}}.sigmas(0).back() == 0.0);
  CHECK_THROWS_WITH((CustomSigmas{{0.5, 1.0}}.sigmas(0)), Contains("strictly decreasing"));
  CHECK_THROWS_WITH(ReferenceSchedule{}.sigmas(0), Contains("at least 1"));
}

// Data x0 ~ N(mu, s^2) elementwise; under rectified flow E[x0 | z_t] is linear in z_t, and the ODE
// maps noise u at t = 1 to mu + s u at t = 0.
constexpr double mu = 2.0, sd = 0.5;
Denoiser gaussian_rf_denoiser() {
  return [](const torch::Tensor& z, double t, int) {
    const double var = (1 - t) * (1 - t) * sd * sd + t * t;
    return mu + (1 - t) * sd * sd / var * (z - (1 - t) * mu);
  };
}

double final_error(const auto& sampler, int steps) {
  const auto u = torch::linspace(-2, 2, 9, torch::kFloat64).reshape({9, 1});
  const auto sigmas = ShiftedLinear{1.0}.sigmas(steps);
  const auto r = sampler.sample(gaussian_rf_denoiser(), u.clone(), sigmas);
  return (r.x - (mu + sd * u)).abs().max().template item<double>();
}

TEST_CASE("Euler converges at first order and Heun at second on an exactly solvable flow", "[sampling]") {
  const double e8 = final_error(Euler{}, 8), e16 = final_error(Euler{}, 16), e32 = final_error(Euler{}, 32);
  CHECK(e8 / e16 == Approx(2.0).margin(0.3));
  CHECK(e16 / e32 == Approx(2.0).margin(0.2));
  const double h8 = final_error(Heun{}, 8), h16 = final_error(Heun{}, 16), h32 = final_error(Heun{}, 32);
  CHECK(h8 / h16 == Approx(4.0).margin(0.8));
  CHECK(h16 / h32 == Approx(4.0).margin(0.6));
  CHECK(h32 < e32 / 10);
  CHECK(final_error(DPMPP2M{}, 32) < e32);
}

TEST_CASE("a model that knows the single data point transports noise to it in one Euler step", "[sampling]") {
  torch::manual_seed(4);
  const auto point = torch::randn({2, 3, 4, 4}, torch::kFloat64), noise = torch::randn({2, 3, 4, 4}, torch::kFloat64);
  const Denoiser exact = [&](const torch::Tensor&, double, int) { return point; };  // x0-hat = the point
  const auto one = Euler{}.sample(exact, noise, {1.0, 0.0});
  CHECK(torch::allclose(one.x, point, 0, 1e-12));
  const auto many = Euler{}.sample(exact, noise, ReferenceSchedule{3.0}.sigmas(10));
  CHECK(torch::allclose(many.x, point, 0, 1e-12));
  // The path is straight: straightness 1 and length ||point - noise||.
  for (int b = 0; b < 2; ++b) {
    CHECK(many.straightness[b].item<double>() == Approx(1.0).epsilon(1e-9));
    CHECK(many.path_length[b].item<double>() == Approx((point[b] - noise[b]).norm().item<double>()).epsilon(1e-9));
  }
  CHECK(many.model_calls == 10);
}

TEST_CASE("the step callback sees every step and can stop the run", "[sampling]") {
  int seen = 0;
  const auto r = Euler{}.sample(gaussian_rf_denoiser(), torch::zeros({1, 1}, torch::kFloat64), ShiftedLinear{}.sigmas(10),
                                [&](const StepInfo& s) {
                                  ++seen;
                                  CHECK(s.steps == 10);
                                  CHECK(s.sigma > s.sigma_next);
                                  return s.step < 2;
                                });
  CHECK(seen == 3);
  CHECK(r.steps_run == 3);
  CHECK(r.stopped);
}

TEST_CASE("the stochastic sampler is seeded, and with eta = 0 it is Euler", "[sampling]") {
  const auto x = torch::linspace(-1, 1, 6, torch::kFloat64).reshape({6, 1});
  const auto sig = ShiftedLinear{3.0}.sigmas(12);
  const auto a = StochasticRF{1.0, 7}.sample(gaussian_rf_denoiser(), x, sig);
  const auto b = StochasticRF{1.0, 7}.sample(gaussian_rf_denoiser(), x, sig);
  const auto c = StochasticRF{1.0, 8}.sample(gaussian_rf_denoiser(), x, sig);
  CHECK(torch::equal(a.x, b.x));
  CHECK_FALSE(torch::equal(a.x, c.x));
  CHECK(torch::allclose(StochasticRF{0.0, 7}.sample(gaussian_rf_denoiser(), x, sig).x,
                        Euler{}.sample(gaussian_rf_denoiser(), x, sig).x, 1e-12, 1e-12));
}

// A stand-in velocity model: v = 0.1 x + mean(context) + mean(y), minus 0.5 when blocks are skipped.
torch::Tensor toy_model(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y, const torch::Tensor& ctx,
                        const std::set<int>& skip) {
  CHECK(t.size(0) == x.size(0));
  const auto shift = (ctx.mean({1, 2}) + y.mean(1)).view({-1, 1, 1, 1});
  return x * 0.1 + shift - (skip.empty() ? 0.0 : 0.5);
}

TEST_CASE("classifier-free and skip-layer guidance combine the passes as the reference does", "[sampling]") {
  const auto x = torch::ones({1, 2, 2, 2});
  const Conditioning cond{torch::full({1, 3, 4}, 1.0), torch::full({1, 5}, 0.5)};
  const Conditioning uncond{torch::zeros({1, 3, 4}), torch::zeros({1, 5})};
  const double sigma = 0.5;
  const auto pos = x - toy_model(x, torch::tensor({500.f}), cond.pooled, cond.context, {}) * sigma;
  const auto neg = x - toy_model(x, torch::tensor({500.f}), uncond.pooled, uncond.context, {}) * sigma;
  const auto skip = x - toy_model(x, torch::tensor({500.f}), cond.pooled, cond.context, {7}) * sigma;

  Guidance one;
  CHECK(torch::allclose(guided_flow_denoiser(toy_model, cond, uncond, one, 10)(x, sigma, 0), pos));
  Guidance g;
  g.cfg_scale = 4.5;
  CHECK(torch::allclose(guided_flow_denoiser(toy_model, cond, uncond, g, 10)(x, sigma, 0), neg + (pos - neg) * 4.5));
  g.slg_scale = 2.5;
  g.skip_layers = {7};
  g.slg_start = 0.01;
  g.slg_end = 0.5;
  const auto d = guided_flow_denoiser(toy_model, cond, uncond, g, 6);
  // Active for 0.06 < step < 3, i.e. steps 1 and 2 of 6 (testdata sampler_c).
  for (int step = 0; step < 6; ++step) {
    const bool active = step == 1 || step == 2;
    const auto expect = neg + (pos - neg) * 4.5 + (active ? (pos - skip) * 2.5 : torch::zeros_like(x));
    CHECK(torch::allclose(d(x, sigma, step), expect));
  }
  Guidance sched;
  sched.cfg_schedule = [](int step, double) { return step == 0 ? 1.0 : 3.0; };
  CHECK(torch::allclose(guided_flow_denoiser(toy_model, cond, uncond, sched, 10)(x, sigma, 1), neg + (pos - neg) * 3.0));
  const Conditioning short_uncond{torch::zeros({1, 2, 4}), torch::zeros({1, 5})};
  CHECK_THROWS_WITH(guided_flow_denoiser(toy_model, cond, short_uncond, g, 6), Contains("same batch and length"));
}

TEST_CASE("any forward process samples through its prediction target", "[sampling]") {
  // Gaussian data again; the exact eps-prediction of the cosine process and the exact velocity of
  // rectified flow, sampled in the (x = z / a, sigma = b / a) form, map u to mu + s u.
  const auto u = torch::linspace(-2, 2, 5, torch::kFloat64).reshape({5, 1});
  auto run = [&](const auto& proc, auto target_tag, auto model) {
    using Target = typename decltype(target_tag)::type;
    std::vector<double> ts;
    for (int i = 0; i < 200; ++i) ts.push_back(0.995 - 0.994 * i / 199.0);
    const auto sigmas = process_sigmas(proc, ts);
    const double smax = sigmas.front();
    const auto x = mu + std::sqrt(sd * sd + smax * smax) * u;  // x_sigma ~ N(mu, s^2 + sigma^2)
    const auto r = Heun{}.sample(process_denoiser<Target>(proc, model), x, sigmas);
    // sampling stops at t = 0.001, where x still carries sigma_min noise: compare loosely.
    CHECK((r.x - (mu + sd * u)).abs().max().template item<double>() < 2e-3);
  };
  const process::Cosine cos;
  run(cos, boost::hana::type_c<process::Eps>, [&](const torch::Tensor& z, double t) {
    const double a = cos.a(t), b = cos.b(t);
    return b * (z - a * mu) / (a * a * sd * sd + b * b);  // E[eps | z]
  });
  const process::RectifiedFlow rf;
  run(rf, boost::hana::type_c<process::Velocity>, [&](const torch::Tensor& z, double t) {
    const double a = 1 - t, b = t, var = a * a * sd * sd + b * b;
    const auto x0 = mu + a * sd * sd / var * (z - a * mu);
    const auto eps = b * (z - a * mu) / var;
    return eps - x0;  // E[eps - x0 | z]
  });
}

TEST_CASE("img2img starts part-way down the schedule from a noised latent", "[sampling]") {
  const auto sig = ReferenceSchedule{3.0}.sigmas(4);
  const auto latent = torch::ones({1, 2}), noise = torch::full({1, 2}, 3.0);
  const auto s = img2img_start(sig, latent, noise, 0.5);
  REQUIRE(s.sigmas.size() == 3);  // start index floor(4 * 0.5) = 2
  CHECK(s.sigmas.front() == Approx(sig[2]));
  CHECK(torch::allclose(s.x, noise * sig[2] + latent * (1 - sig[2])));
  CHECK(img2img_start(sig, latent, noise, 1.0).sigmas.size() == 5);
  CHECK_THROWS_AS(img2img_start(sig, latent, noise, 0.0), InputError);
}

}  // namespace t_sampling

#include "diffuse/sampling/conditioning.hpp"

namespace t_sampling_conditioning {

using namespace diffuse;
using namespace diffuse::sampling;

TEST_CASE("SD3 conditioning is assembled from per-encoder outputs, with zeros for dropped encoders", "[sampling]") {
  EncoderOutputs e;
  e.clip_l_hidden = torch::ones({2, 77, 768});
  e.clip_l_pooled = torch::full({2, 768}, 2.0);
  e.t5_hidden = torch::full({2, 77, 4096}, 3.0);  // CLIP-G dropped
  const auto c = assemble_sd3_conditioning(e, 2);
  REQUIRE(c.context.sizes() == torch::IntArrayRef{2, 154, 4096});
  REQUIRE(c.pooled.sizes() == torch::IntArrayRef{2, 2048});
  CHECK(c.context.narrow(1, 0, 77).narrow(2, 0, 768).eq(1).all().item<bool>());
  CHECK(c.context.narrow(1, 0, 77).narrow(2, 768, 4096 - 768).eq(0).all().item<bool>());  // CLIP-G zeros + padding
  CHECK(c.context.narrow(1, 77, 77).eq(3).all().item<bool>());
  CHECK(c.pooled.narrow(1, 768, 1280).eq(0).all().item<bool>());
  CHECK(assemble_sd3_conditioning({}, 1).context.abs().sum().item<float>() == 0);  // everything dropped
  EncoderOutputs longer;
  longer.t5_hidden = torch::zeros({1, 256, 4096});  // diffusers' max_sequence_length
  CHECK(assemble_sd3_conditioning(longer, 1).context.size(1) == 77 + 256);
  EncoderOutputs bad;
  bad.clip_g_hidden = torch::zeros({1, 77, 1024});
  CHECK_THROWS_WITH(assemble_sd3_conditioning(bad, 1), Catch::Matchers::Contains("CLIP-G hidden states must be [1, 77, 1280]"));
}

}  // namespace t_sampling_conditioning
