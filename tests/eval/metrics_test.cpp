// PSNR and SSIM against hand-computed values.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "diffuse/eval/metrics.hpp"

namespace t_metrics {

using namespace diffuse::eval;

Image filled(std::size_t h, std::size_t w, std::size_t c, double v) {
  Image im = xt::zeros<double>({h, w, c});
  im.fill(v);
  return im;
}

TEST_CASE("PSNR: identical images are infinite; a uniform error of 1 on 8 bits is 48.13 dB", "[eval][metrics]") {
  const auto a = filled(8, 8, 3, 100), b = filled(8, 8, 3, 101);
  CHECK(std::isinf(psnr(a, a)));
  CHECK(psnr(a, b) == Approx(20 * std::log10(255.0)).epsilon(1e-12));  // 48.1308
  CHECK(psnr(filled(4, 4, 1, 0.5), filled(4, 4, 1, 0.6), 1.0) == Approx(20.0).epsilon(1e-9));  // MSE 0.01
  CHECK_THROWS(psnr(a, filled(8, 7, 3, 0)));
}

TEST_CASE("SSIM: 1 for identical images, the closed form for constant images, lower for noise", "[eval][metrics]") {
  const auto a = filled(16, 16, 1, 100), b = filled(16, 16, 1, 150);
  CHECK(ssim(a, a) == Approx(1.0));
  // Constant images: variances 0, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
  const double c1 = std::pow(0.01 * 255, 2);
  CHECK(ssim(a, b) == Approx((2 * 100.0 * 150 + c1) / (100.0 * 100 + 150.0 * 150 + c1)).epsilon(1e-12));
  std::mt19937 rng(1);
  std::normal_distribution<double> n(0, 20);
  Image noisy = a;
  for (auto& v : noisy) v += n(rng);
  const double s = ssim(a, noisy);
  CHECK(s < 0.5);
  CHECK(s > -1.0);
  // Symmetric, and the known single-window value for an 11 x 11 pair with a linear relation y = 2x:
  Image x = xt::zeros<double>({11ul, 11ul, 1ul}), y = x;
  for (int i = 0; i < 11; ++i)
    for (int j = 0; j < 11; ++j) x(i, j, 0) = i * 11 + j, y(i, j, 0) = 2 * (i * 11 + j);
  CHECK(ssim(x, y) == Approx(ssim(y, x)));
  CHECK(ssim(x, y) < 1.0);
  CHECK_THROWS(ssim(filled(10, 20, 1, 0), filled(10, 20, 1, 0)));
}

}  // namespace t_metrics
