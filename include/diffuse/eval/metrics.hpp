#pragma once
// Image reconstruction metrics (torch-free, xtensor): PSNR and SSIM.
//   PSNR = 10 log10(L^2 / MSE), L the data range (255 for 8-bit images, 1 for [0, 1]).
//   SSIM (Wang, Bovik, Sheikh & Simoncelli 2004): an 11 x 11 Gaussian window with sigma 1.5,
//   K1 = 0.01, K2 = 0.03, evaluated at every position where the window fits ("valid"), averaged
//   over positions and channels — the standard reference implementation's settings.
#include <cmath>
#include <limits>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "diffuse/core/error.hpp"

namespace diffuse::eval {

using Image = xt::xtensor<double, 3>;  // (height, width, channels)

inline void check_same_shape(const Image& a, const Image& b, const char* what) {
  if (a.shape() != b.shape()) throw InputError(std::string(what) + ": images must have the same shape");
}

inline double psnr(const Image& a, const Image& b, double data_range = 255.0) {
  check_same_shape(a, b, "psnr");
  double mse = 0;
  for (std::size_t i = 0; i < a.size(); ++i) mse += (a.data()[i] - b.data()[i]) * (a.data()[i] - b.data()[i]);
  mse /= static_cast<double>(a.size());
  if (mse == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(data_range * data_range / mse);
}

inline double ssim(const Image& a, const Image& b, double data_range = 255.0) {
  check_same_shape(a, b, "ssim");
  constexpr int win = 11;
  constexpr double sigma = 1.5;
  const auto h = static_cast<int>(a.shape()[0]), w = static_cast<int>(a.shape()[1]), ch = static_cast<int>(a.shape()[2]);
  if (h < win || w < win) throw InputError("ssim: images must be at least 11 x 11");
  std::vector<double> g(win * win);
  double gs = 0;
  for (int y = 0; y < win; ++y)
    for (int x = 0; x < win; ++x) gs += g[y * win + x] = std::exp(-((x - 5) * (x - 5) + (y - 5) * (y - 5)) / (2 * sigma * sigma));
  for (auto& v : g) v /= gs;
  const double c1 = std::pow(0.01 * data_range, 2), c2 = std::pow(0.03 * data_range, 2);
  double total = 0;
  int count = 0;
  for (int c = 0; c < ch; ++c)
    for (int y0 = 0; y0 + win <= h; ++y0)
      for (int x0 = 0; x0 + win <= w; ++x0) {
        double mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;
        for (int y = 0; y < win; ++y)
          for (int x = 0; x < win; ++x) {
            const double wgt = g[y * win + x], p = a(y0 + y, x0 + x, c), q = b(y0 + y, x0 + x, c);
            mx += wgt * p, my += wgt * q, sxx += wgt * p * p, syy += wgt * q * q, sxy += wgt * p * q;
          }
        const double vx = sxx - mx * mx, vy = syy - my * my, cxy = sxy - mx * my;
        total += ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
        ++count;
      }
  return total / count;
}

}  // namespace diffuse::eval
