// Timestep distributions: densities are non-negative and integrate to 1, match the derivative of
// the CDF, sampled histograms match (Kolmogorov-Smirnov), shifting keeps the paper's noise level.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include <boost/hana/for_each.hpp>
#include <boost/hana/tuple.hpp>
#include <torch/torch.h>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>

#include "diffuse/timesteps/cosmap.hpp"
#include "diffuse/timesteps/edm_lognormal.hpp"
#include "diffuse/timesteps/logit_normal.hpp"
#include "diffuse/timesteps/mode_heavy_tails.hpp"
#include "diffuse/timesteps/shift.hpp"
#include "diffuse/timesteps/uniform.hpp"

namespace t_timesteps {

using namespace diffuse::timesteps;
namespace hana = boost::hana;
using Catch::Matchers::Contains;

auto all_distributions() {
  return hana::make_tuple(Uniform{}, LogitNormal{}, LogitNormal{-0.5, 0.6}, LogitNormal{1.0, 1.0},
                          ModeHeavyTails(-1.0), ModeHeavyTails(0.0), ModeHeavyTails(1.29), ModeHeavyTails(1.75),
                          CosMap{}, EDMLogNormal{}, Shifted<LogitNormal>{{}, {3.0}}, Shifted<Uniform>{{}, {0.5}},
                          Shifted<ModeHeavyTails>{ModeHeavyTails(1.0), Shift{2.0}});
}

// Midpoint rule on (0, 1) in the variable u with t = u^2 (3 - 2u) (smoothstep), which packs points
// near both ends where densities such as logit-normal's have steep tails.
template <class D>
double integral(const D& d, int n) {
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    const double u = (i + 0.5) / n;
    const double t = u * u * (3 - 2 * u), dt = 6 * u * (1 - u);
    sum += d.density(t) * dt / n;
  }
  return sum;
}

TEST_CASE("densities are non-negative and integrate to 1", "[timesteps]") {
  hana::for_each(all_distributions(), [](const auto& d) {
    INFO(d.describe());
    for (int i = 1; i < 1000; ++i) CHECK(d.density(i / 1000.0) >= 0.0);
    // mode(1.75) sits 0.002 below the limit 2/(pi-2): its peak is a near-cusp, so it needs more points.
    CHECK(integral(d, 400000) == Approx(1.0).margin(2e-4));
  });
}

TEST_CASE("densities are the derivative of the CDF", "[timesteps]") {
  hana::for_each(all_distributions(), [](const auto& d) {
    INFO(d.describe());
    CHECK(d.cdf(0.0) == 0.0);
    CHECK(d.cdf(1.0) == 1.0);
    for (double t : {0.02, 0.15, 0.33, 0.47, 0.61, 0.8, 0.97}) {
      const double h = 1e-6;
      CHECK(d.density(t) == Approx((d.cdf(t + h) - d.cdf(t - h)) / (2 * h)).epsilon(1e-4).margin(1e-6));
    }
  });
}

TEST_CASE("sampled histograms match the distribution (Kolmogorov-Smirnov, 1e5 samples)", "[timesteps]") {
  // For n = 1e5 the KS statistic exceeds 1.95 / sqrt(n) = 0.0062 with probability 0.001 under the
  // null; we assert 0.01. A wrong density or sampler moves it by far more.
  hana::for_each(all_distributions(), [](const auto& d) {
    INFO(d.describe());
    auto gen = at::detail::createCPUGenerator(20240601);
    const auto s = d.sample(100000, gen);
    REQUIRE(s.scalar_type() == torch::kFloat64);
    std::vector<double> v(s.template data_ptr<double>(), s.template data_ptr<double>() + s.numel());
    std::sort(v.begin(), v.end());
    double ks = 0;
    const double n = static_cast<double>(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) {
      const double f = d.cdf(v[i]);
      ks = std::max({ks, std::abs(f - i / n), std::abs(f - (i + 1) / n)});
    }
    CHECK(ks < 0.01);
    CHECK(v.front() >= 0.0);
    CHECK(v.back() <= 1.0);
  });
}

TEST_CASE("a KS check detects the wrong distribution", "[timesteps]") {
  auto gen = at::detail::createCPUGenerator(1);
  const auto s = LogitNormal{0.0, 1.0}.sample(100000, gen);
  std::vector<double> v(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
  std::sort(v.begin(), v.end());
  const LogitNormal other{0.1, 1.0};
  double ks = 0;
  for (std::size_t i = 0; i < v.size(); ++i) ks = std::max(ks, std::abs(other.cdf(v[i]) - double(i) / v.size()));
  CHECK(ks > 0.01);  // so the 0.01 bound above has power against a 0.1 shift of the mean
}

TEST_CASE("sampling is deterministic for a seed", "[timesteps]") {
  auto g1 = at::detail::createCPUGenerator(5), g2 = at::detail::createCPUGenerator(5);
  CHECK(torch::equal(ModeHeavyTails(1.29).sample(64, g1), ModeHeavyTails(1.29).sample(64, g2)));
  auto g3 = at::detail::createCPUGenerator(6);
  CHECK_FALSE(torch::equal(ModeHeavyTails(1.29).sample(64, g1), ModeHeavyTails(1.29).sample(64, g3)));
}

TEST_CASE("mode(s) rejects s outside [-1, 2/(pi-2)]", "[timesteps]") {
  CHECK_THROWS_WITH(ModeHeavyTails(1.76), Contains("outside"));
  CHECK_THROWS_WITH(ModeHeavyTails(-1.01), Contains("outside"));
  CHECK_NOTHROW(ModeHeavyTails(-1.0));
  CHECK_NOTHROW(ModeHeavyTails(ModeHeavyTails::s_max));
  CHECK(ModeHeavyTails(0.0).density(0.3) == Approx(1.0));  // s = 0 is uniform
}

TEST_CASE("EDM's log-normal is logit-normal in rectified-flow time", "[timesteps]") {
  const EDMLogNormal e{-1.2, 1.2};
  const LogitNormal l{-1.2, 1.2};
  for (double t : {0.1, 0.3, 0.5, 0.9}) CHECK(e.density(t) == Approx(l.density(t)));
}

TEST_CASE("the shift keeps the constant-image noise level equal across resolutions", "[timesteps]") {
  // sigma(t, n) = t / (1 - t) sqrt(1 / n) (SD3 section 5.3.2); t_m = shift(t_n) with alpha = sqrt(m / n).
  const double n = 256.0 * 256.0, m = 1024.0 * 1024.0;
  const Shift s = Shift::for_resolution(m, n);
  CHECK(s.alpha == Approx(4.0));
  auto sigma = [](double t, double pixels) { return t / (1 - t) * std::sqrt(1.0 / pixels); };
  for (double t : {0.05, 0.2, 0.5, 0.8, 0.95}) {
    CHECK(sigma(s(t), m) == Approx(sigma(t, n)).epsilon(1e-12));
    CHECK(s.inverse(s(t)) == Approx(t).epsilon(1e-12));
  }
  CHECK(s(0.0) == 0.0);
  CHECK(s(1.0) == 1.0);
  CHECK_THROWS(Shift::for_resolution(0, n));
}

TEST_CASE("densities agree on double, torch::Tensor and xt::xarray", "[timesteps]") {
  const std::vector<double> ts = {0.1, 0.4, 0.7};
  const auto tt = torch::tensor(ts, torch::kFloat64);
  const xt::xarray<double> tx = xt::adapt(ts, {ts.size()});
  hana::for_each(all_distributions(), [&](const auto& d) {
    INFO(d.describe());
    const auto dt = d.density(tt);
    const xt::xarray<double> dx = d.density(tx);
    for (std::size_t i = 0; i < ts.size(); ++i) {
      CHECK(dt[i].template item<double>() == Approx(d.density(ts[i])).epsilon(1e-13));
      CHECK(dx(i) == Approx(d.density(ts[i])).epsilon(1e-13));
    }
  });
}

}  // namespace t_timesteps
