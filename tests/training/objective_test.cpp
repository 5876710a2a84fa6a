// Objectives: the SD3 paper's variant catalogue (finite losses, gradients, effective weightings
// equal to independently derived closed forms), the unified-weighting identities, and the loss.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include <boost/hana/for_each.hpp>
#include <torch/torch.h>

#include "diffuse/timesteps/shift.hpp"
#include "diffuse/training/trainer.hpp"
#include "diffuse/training/variants.hpp"

namespace t_objective {

using namespace diffuse;
using namespace diffuse::training;
namespace hana = boost::hana;
constexpr double pi = 3.14159265358979323846;

double normal_pdf(double x, double mean, double sd) {
  const double z = (x - mean) / sd;
  return std::exp(-0.5 * z * z) / (sd * std::sqrt(2 * pi));
}

// w_t derived by hand for each family, written independently of the library's generic formula
// w = -2 pi omega c^2 / lambda'. Where the paper states a form up to a constant factor, the
// factor is noted.
template <class Obj>
double analytic_weight(const Obj& obj, double t) {
  using namespace variants;
  const double pdf = obj.timesteps.density(t);
  const double s = std::sin(pi * t / 2), c = std::cos(pi * t / 2);
  const double sd2 = 0.25;  // sigma_data^2
  if constexpr (std::is_same_v<typename Obj::process_type, process::RectifiedFlow>) {
    return t / (1 - t) * pdf;  // SD3 section 3.1: w = t / (1 - t) pi(t)
  } else if constexpr (std::is_same_v<Obj, EpsLinear>) {
    return -2.0 / process::dlog_snr(obj.process, t);  // L_simple: w = -2 / lambda'
  } else if constexpr (std::is_same_v<Obj, VLinear>) {
    const double a = obj.process.a(t);
    return -2.0 / (a * a * process::dlog_snr(obj.process, t));  // c_v = 1 / a on a VP process
  } else if constexpr (std::is_same_v<Obj, EpsCos>) {
    return std::sin(pi * t) / pi;  // (1/pi) x the paper's sech(lambda / 2) = sin(pi t)
  } else if constexpr (std::is_same_v<Obj, VCos>) {
    return 2.0 / pi * s / c;  // (2/pi) x the paper's e^(-lambda / 2) = tan(pi t / 2)
  } else if constexpr (std::is_same_v<Obj, EDMLogNorm>) {
    // (2 / sigma_d^2) = 8 x the paper's N(lambda; -2 P_m, (2 P_s)^2) (e^-lambda + 0.5^2)
    const auto& sch = obj.process.schedule;
    const double sigma = sch.sigma(t), lambda = -2 * std::log(sigma);
    return 2.0 / sd2 * normal_pdf(lambda, -2 * sch.P_m, 2 * sch.P_s) * (std::exp(-lambda) + sd2);
  } else if constexpr (std::is_same_v<Obj, EDMRF>) {
    const double sigma = t / (1 - t);
    return t * (1 - t) * (sigma * sigma + sd2) / sd2;
  } else if constexpr (std::is_same_v<Obj, EDMCos>) {
    return std::sin(pi * t) / pi * (s * s / (c * c) + sd2) / sd2;
  } else {
    static_assert(sizeof(Obj) == 0, "no analytic form for this variant");
  }
}

TEST_CASE("every variant of the SD3 comparison has a finite loss and the analytic weighting", "[objective]") {
  torch::manual_seed(3);
  const auto x0 = torch::randn({8, 4, 6, 6});
  const auto noise = torch::randn({8, 4, 6, 6});
  std::size_t count = 0;
  hana::for_each(sd3_paper_variants(), [&](const auto& family) {
    for (const auto& v : family.variants) {
      INFO(v.name);
      ++count;
      auto gen = at::detail::createCPUGenerator(11);
      const auto t = v.objective.sample_t(8, gen, x0).clamp(1e-4, 1 - 1e-4);
      const auto in = v.objective.inputs(x0, noise, t);
      CHECK(torch::isfinite(in.z).all().template item<bool>());
      auto output = torch::randn_like(x0).requires_grad_(true);
      const auto loss = v.objective.loss(output, x0, noise, t);
      REQUIRE(loss.sizes() == torch::IntArrayRef{8});
      CHECK(torch::isfinite(loss).all().template item<bool>());
      loss.mean().backward();
      CHECK(torch::isfinite(output.grad()).all().template item<bool>());
      CHECK(output.grad().abs().sum().template item<float>() > 0);
      for (double tt : {0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98}) {
        const double w = v.objective.effective_weight(tt);
        CHECK(w >= 0);
        CHECK(w == Approx(analytic_weight(v.objective, tt)).epsilon(1e-6));
      }
    }
  });
  CHECK(count == 29);  // 1+1+1+1+1 + 8 mode + 10 lognorm + 1 cosmap + 3 edm + 2
}

TEST_CASE("the unified-weighting identities hold to 1e-6", "[objective]") {
  using namespace diffuse::process;
  namespace ts = diffuse::timesteps;
  const Objective<RectifiedFlow, ts::LogitNormal, weighting::Uniform> rf_ln{{}, {0.0, 1.0}, {}};
  const Objective<RectifiedFlow, ts::Shifted<ts::CosMap>, weighting::Uniform> rf_shift{{}, {{}, {3.0}}, {}};
  const Objective<LDMLinear, ts::Uniform, weighting::Uniform, Eps> eps_linear{};
  for (double t : {0.01, 0.2, 0.5, 0.8, 0.99}) {
    CHECK(rf_ln.effective_weight(t) == Approx(t / (1 - t) * rf_ln.timesteps.density(t)).epsilon(1e-6));
    CHECK(rf_shift.effective_weight(t) == Approx(t / (1 - t) * rf_shift.timesteps.density(t)).epsilon(1e-6));
    CHECK(eps_linear.effective_weight(t) == Approx(-2.0 / dlog_snr(eps_linear.process, t)).epsilon(1e-6));
  }
}

TEST_CASE("the rectified-flow loss is the MSE to eps - x0 at z_t = (1 - t) x0 + t eps", "[objective]") {
  const Objective<process::RectifiedFlow, timesteps::Uniform, weighting::Uniform> obj{};
  const auto x0 = torch::tensor({1.0f, 2.0f}).reshape({2, 1});
  const auto eps = torch::tensor({-1.0f, 0.5f}).reshape({2, 1});
  const auto t = torch::tensor({0.25f, 0.5f});
  const auto in = obj.inputs(x0, eps, t);
  CHECK(in.z[0].item<float>() == Approx(0.75 * 1.0 + 0.25 * -1.0));
  CHECK(in.target[1].item<float>() == Approx(0.5 - 2.0));
  const auto loss = obj.loss(torch::zeros({2, 1}), x0, eps, t);
  CHECK(loss[0].item<float>() == Approx(4.0));   // (0 - (-2))^2
  CHECK(loss[1].item<float>() == Approx(2.25));  // (0 - (-1.5))^2
}

TEST_CASE("the EDM weighting applies (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 to the x0 error", "[objective]") {
  const variants::EDMRF obj{};
  const auto x0 = torch::ones({1, 1});
  const auto t = torch::tensor({0.5});  // sigma = 1
  const auto loss = obj.loss(torch::zeros({1, 1}), x0, torch::zeros({1, 1}), t);
  CHECK(loss[0].item<float>() == Approx((1.0 + 0.25) / 0.25));
}

TEST_CASE("the trainer's timestep_shift turns logit-normal(0, 1) into logit-normal(log shift, 1)", "[objective][training]") {
  const Objective<process::RectifiedFlow, timesteps::LogitNormal, weighting::Uniform> obj{};
  const auto like = torch::zeros({1}, torch::kFloat32);
  for (const double shift : {1.0, 0.5, 3.0}) {
    auto g1 = at::detail::createCPUGenerator(5);
    auto g2 = at::detail::createCPUGenerator(5);
    const auto t = trainer_detail::sample_training_t(obj, shift, 20000, g1, like).to(torch::kFloat64);
    // The same draws through the equivalent distribution: m = log(shift).
    const timesteps::LogitNormal moved{std::log(shift), 1.0};
    const auto expect = moved.sample(20000, g2).to(torch::kFloat32).to(torch::kFloat64);
    CHECK((t - expect).abs().max().item<double>() < 1e-6);
    // And the empirical distribution follows the shifted density's CDF (Kolmogorov-Smirnov,
    // n = 20000: 1.63 / sqrt(n) = 0.0115 is the 1% critical value).
    const timesteps::Shifted<timesteps::LogitNormal> shifted{{}, timesteps::Shift{shift}};
    const auto sorted = std::get<0>(t.sort());
    double ks = 0;
    for (std::int64_t i = 0; i < sorted.size(0); i += 37) {
      const double f = shifted.cdf(sorted[i].item<double>());
      ks = std::max({ks, std::abs(f - double(i) / 20000.0), std::abs(f - double(i + 1) / 20000.0)});
    }
    CHECK(ks < 0.0115);
    CHECK(t.median().item<double>() == Approx(shift / (1.0 + shift)).margin(0.02));  // sigmoid(log shift)
  }
  CHECK_THROWS_AS(([] {
                    auto c = TrainConfig::shapes_default();
                    c.timestep_shift = 0;
                    c.validate();
                  }()),
                  diffuse::InputError);
}

}  // namespace t_objective
