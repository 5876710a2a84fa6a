// Forward processes and prediction targets: boundary laws, derivatives, value-type agreement,
// the LDM table, and target conversions that round-trip.
#include <catch2/catch.hpp>

#include <cmath>

#include <boost/hana/for_each.hpp>
#include <boost/hana/tuple.hpp>
#include <torch/torch.h>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>

#include "diffuse/process/cosine.hpp"
#include "diffuse/process/edm.hpp"
#include "diffuse/process/flow_matching.hpp"
#include "diffuse/process/ldm_linear.hpp"
#include "diffuse/process/rectified_flow.hpp"
#include "diffuse/core/value_torch.hpp"

namespace t_process {

using namespace diffuse::process;
namespace hana = boost::hana;

auto all_processes() {
  return hana::make_tuple(RectifiedFlow{}, FlowMatching{}, LDMLinear{}, Cosine{}, EDM<edm::LogNormalSigma>{},
                          EDM<edm::RFSigma>{}, EDM<edm::CosineSigma>{});
}

TEST_CASE("every process returns x0 at t = 0", "[process]") {
  hana::for_each(all_processes(), [](const auto& p) {
    INFO(std::string(p.name));
    CHECK(p.a(0.0) == Approx(1.0).margin(1e-12));
    CHECK(p.b(0.0) == Approx(0.0).margin(2e-5));  // flow matching keeps sigma_min = 1e-5
  });
}

TEST_CASE("processes that end in pure noise do so at t = 1", "[process]") {
  CHECK(RectifiedFlow{}.a(1.0) == 0.0);
  CHECK(RectifiedFlow{}.b(1.0) == 1.0);
  CHECK(FlowMatching{}.a(1.0) == 0.0);
  CHECK(FlowMatching{}.b(1.0) == Approx(1.0).epsilon(1e-12));
  CHECK(Cosine{}.a(1.0) == Approx(0.0).margin(1e-15));
  CHECK(Cosine{}.b(1.0) == 1.0);
  // LDM-linear does not: a_1 = sqrt(alpha_bar_1000), about 0.068.
  CHECK(LDMLinear{}.a(1.0) == Approx(0.0683).epsilon(1e-2));
}

TEST_CASE("derivatives and the log-SNR derivative match finite differences", "[process]") {
  hana::for_each(all_processes(), [](const auto& p) {
    INFO(std::string(p.name));
    for (double t : {0.013, 0.1, 0.37, 0.5, 0.71, 0.9, 0.987}) {
      const double h = 1e-6;
      // LDM-linear is piecewise smooth with knots at k / 1000: keep the stencil inside one piece.
      const double tt = std::floor(t * 1000) / 1000 + 0.0005;
      const double fd_a = (p.a(tt + h) - p.a(tt - h)) / (2 * h);
      const double fd_b = (p.b(tt + h) - p.b(tt - h)) / (2 * h);
      const double fd_l = (log_snr(p, tt + h) - log_snr(p, tt - h)) / (2 * h);
      CHECK(p.da(tt) == Approx(fd_a).epsilon(1e-5).margin(1e-7));
      CHECK(p.db(tt) == Approx(fd_b).epsilon(1e-5).margin(1e-7));
      CHECK(dlog_snr(p, tt) == Approx(fd_l).epsilon(1e-5));
      CHECK(dlog_snr(p, tt) < 0);  // signal-to-noise falls with t
    }
  });
}

TEST_CASE("one formula gives the same values on double, torch::Tensor and xt::xarray", "[process]") {
  const std::vector<double> ts = {0.05, 0.25, 0.5, 0.75, 0.95};
  const auto tt = torch::tensor(ts, torch::kFloat64);
  const xt::xarray<double> tx = xt::adapt(ts, {ts.size()});
  hana::for_each(all_processes(), [&](const auto& p) {
    INFO(std::string(p.name));
    const auto a_t = p.a(tt), b_t = p.b(tt), da_t = p.da(tt), db_t = p.db(tt);
    const xt::xarray<double> a_x = p.a(tx), db_x = p.db(tx);
    const auto l_t = log_snr(p, tt);
    for (std::size_t i = 0; i < ts.size(); ++i) {
      CHECK(a_t[i].template item<double>() == Approx(p.a(ts[i])).epsilon(1e-14));
      CHECK(b_t[i].template item<double>() == Approx(p.b(ts[i])).epsilon(1e-14));
      CHECK(da_t[i].template item<double>() == Approx(p.da(ts[i])).epsilon(1e-14));
      CHECK(db_t[i].template item<double>() == Approx(p.db(ts[i])).epsilon(1e-14));
      CHECK(l_t[i].template item<double>() == Approx(log_snr(p, ts[i])).epsilon(1e-14));
      CHECK(a_x(i) == Approx(p.a(ts[i])).epsilon(1e-14));
      CHECK(db_x(i) == Approx(p.db(ts[i])).epsilon(1e-14));
    }
  });
}

TEST_CASE("LDM-linear equals the discrete DDPM products at t = k / N", "[process]") {
  const LDMLinear p;
  double alpha_bar = 1.0;
  for (int k = 0; k <= 1000; ++k) {
    if (k > 0) {
      const double sb = std::sqrt(0.00085) + (std::sqrt(0.012) - std::sqrt(0.00085)) * (k - 1) / 999.0;
      alpha_bar *= 1.0 - sb * sb;
    }
    if (k % 50 == 0) {
      INFO("k = " << k);
      CHECK(p.a(k / 1000.0) == Approx(std::sqrt(alpha_bar)).epsilon(1e-12));
      CHECK(p.a(k / 1000.0) * p.a(k / 1000.0) + p.b(k / 1000.0) * p.b(k / 1000.0) == Approx(1.0).epsilon(1e-12));
    }
  }
}

TEST_CASE("cosine and LDM-linear are variance preserving; RF is not", "[process]") {
  for (double t : {0.1, 0.5, 0.9}) {
    CHECK(Cosine{}.a(t) * Cosine{}.a(t) + Cosine{}.b(t) * Cosine{}.b(t) == Approx(1.0));
    CHECK(RectifiedFlow{}.a(t) + RectifiedFlow{}.b(t) == Approx(1.0));
  }
  CHECK(Cosine::variance_preserving);
  CHECK(LDMLinear::variance_preserving);
  CHECK_FALSE(RectifiedFlow::variance_preserving);
}

TEST_CASE("prediction targets convert into each other exactly", "[process]") {
  torch::manual_seed(7);
  const auto x0 = torch::randn({4, 3, 5, 5}, torch::kFloat64);
  const auto eps = torch::randn({4, 3, 5, 5}, torch::kFloat64);
  const auto t = torch::tensor({0.1, 0.4, 0.6, 0.9}, torch::kFloat64).reshape({4, 1, 1, 1});
  const auto targets = hana::make_tuple(hana::type_c<Eps>, hana::type_c<X0>, hana::type_c<Velocity>, hana::type_c<V>);
  hana::for_each(all_processes(), [&](const auto& p) {
    const auto c = coefficients(p, t);
    const auto z = noisy(c, x0, eps);
    hana::for_each(targets, [&](auto from) {
      hana::for_each(targets, [&](auto to) {
        using From = typename decltype(from)::type;
        using To = typename decltype(to)::type;
        INFO(std::string(p.name) << ": " << From::name << " -> " << To::name);
        const auto pred = From::target(x0, eps, c);
        const auto converted = convert<To, From>(pred, z, c);
        CHECK(torch::allclose(converted, To::target(x0, eps, c), 1e-9, 1e-9));
      });
    });
  });
}

TEST_CASE("rectified flow's velocity is eps - x0 and its error factor is 1 / (1 - t)", "[process]") {
  const RectifiedFlow p;
  const auto c = coefficients(p, 0.3);
  CHECK(Velocity::target(2.0, 5.0, c) == 3.0);
  CHECK(Velocity::c_eps(c) == Approx(1.0 / 0.7));
  // |v-hat - v| = c |eps-hat - eps| with z fixed: perturb eps-hat and compare.
  const double z = noisy(c, 2.0, 5.0);
  const double v_hat = convert<Velocity, Eps>(5.1, z, c);
  CHECK(std::abs(v_hat - 3.0) == Approx(Velocity::c_eps(c) * 0.1));
}

}  // namespace t_process
