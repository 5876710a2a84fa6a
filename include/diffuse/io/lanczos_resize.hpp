#pragma once
// Resizing 8-bit RGB images the way Pillow's Image.resize(size, Image.LANCZOS) does (torch-free),
// so that an image the SD3.5 reference resizes (sd3_infer.py _image_to_latent: init and ControlNet
// images) gives the same bytes here.
//
// Pillow's algorithm (libImaging/Resample.c, documented in its "Filters" handbook page): a
// separable convolution, the horizontal pass first, with the Lanczos-3 kernel
// sinc(x) sinc(x / 3) on |x| < 3, widened by the scale when shrinking (anti-aliasing). Each output
// sample's weights are normalised to sum to 1, then turned into fixed point with 22 fractional
// bits (32 - 8 - 2), rounded half away from zero; a pass sums pixel * weight in 32-bit integers
// from half a unit, shifts right by 22 and clamps to 0..255. The vertical pass reads the
// horizontal pass's 8-bit rows.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include "diffuse/core/error.hpp"
#include "diffuse/io/png.hpp"

namespace diffuse::io {

namespace lanczos_detail {

inline constexpr int precision_bits = 32 - 8 - 2;

inline double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= std::numbers::pi;
  return std::sin(x) / x;
}

inline double lanczos3(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0; }

// For each output sample: the first input sample it reads, how many, and their fixed-point weights.
struct Taps {
  std::vector<int> first, count;
  std::vector<std::int32_t> weights;  // out_size x width
  int width = 0;
};

inline Taps taps(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = 3.0 * filter_scale;
  Taps t;
  t.width = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(static_cast<std::size_t>(out_size));
  t.count.resize(static_cast<std::size_t>(out_size));
  t.weights.assign(static_cast<std::size_t>(out_size) * static_cast<std::size_t>(t.width), 0);
  std::vector<double> w(static_cast<std::size_t>(t.width));
  for (int o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);  // truncation toward zero, as C's (int)
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = hi - lo;
    double sum = 0.0;
    for (int i = 0; i < n; ++i) sum += w[static_cast<std::size_t>(i)] = lanczos3((i + lo - center + 0.5) / filter_scale);
    for (int i = 0; i < n; ++i) {
      const double k = sum != 0.0 ? w[static_cast<std::size_t>(i)] / sum : w[static_cast<std::size_t>(i)];
      const double fixed = k * (1 << precision_bits);
      t.weights[static_cast<std::size_t>(o) * static_cast<std::size_t>(t.width) + static_cast<std::size_t>(i)] =
          static_cast<std::int32_t>(k < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    t.first[static_cast<std::size_t>(o)] = lo;
    t.count[static_cast<std::size_t>(o)] = n;
  }
  return t;
}

inline std::uint8_t clip8(std::int32_t acc) {
  return static_cast<std::uint8_t>(std::clamp(acc >> precision_bits, 0, 255));  // arithmetic shift: floor
}

}  // namespace lanczos_detail

// `image` (height, width, 3) resized to width x height; the same size returns a copy (as Pillow).
inline RGBImage lanczos_resize(const RGBImage& image, int width, int height) {
  using namespace lanczos_detail;
  if (width < 1 || height < 1)
    throw InputError("lanczos_resize: the target size must be positive, got " + std::to_string(width) + "x" + std::to_string(height));
  const int in_h = static_cast<int>(image.shape(0)), in_w = static_cast<int>(image.shape(1));
  if (in_w < 1 || in_h < 1) throw InputError("lanczos_resize: the image is empty");
  if (in_w == width && in_h == height) return image;
  const auto half = std::int32_t{1} << (precision_bits - 1);
  // Horizontal pass over the rows the vertical pass reads (all rows unless the width is unchanged).
  const auto vt = taps(in_h, height);
  RGBImage rows = image;
  int row0 = 0;
  if (in_w != width) {
    const auto ht = taps(in_w, width);
    row0 = vt.first.front();
    const int row_end = vt.first.back() + vt.count.back();
    rows = RGBImage({static_cast<std::size_t>(row_end - row0), static_cast<std::size_t>(width), std::size_t{3}});
    for (int y = row0; y < row_end; ++y)
      for (int x = 0; x < width; ++x)
        for (int c = 0; c < 3; ++c) {
          std::int32_t acc = half;
          const auto* k = &ht.weights[static_cast<std::size_t>(x) * static_cast<std::size_t>(ht.width)];
          for (int i = 0; i < ht.count[static_cast<std::size_t>(x)]; ++i)
            acc += image(static_cast<std::size_t>(y), static_cast<std::size_t>(ht.first[static_cast<std::size_t>(x)] + i),
                         static_cast<std::size_t>(c)) * k[i];
          rows(static_cast<std::size_t>(y - row0), static_cast<std::size_t>(x), static_cast<std::size_t>(c)) = clip8(acc);
        }
  }
  if (in_h == height) return rows;
  RGBImage out({static_cast<std::size_t>(height), static_cast<std::size_t>(width), std::size_t{3}});
  for (int y = 0; y < height; ++y) {
    const auto* k = &vt.weights[static_cast<std::size_t>(y) * static_cast<std::size_t>(vt.width)];
    const int first = vt.first[static_cast<std::size_t>(y)] - row0;
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) {
        std::int32_t acc = half;
        for (int i = 0; i < vt.count[static_cast<std::size_t>(y)]; ++i)
          acc += rows(static_cast<std::size_t>(first + i), static_cast<std::size_t>(x), static_cast<std::size_t>(c)) * k[i];
        out(static_cast<std::size_t>(y), static_cast<std::size_t>(x), static_cast<std::size_t>(c)) = clip8(acc);
      }
  }
  return out;
}

}  // namespace diffuse::io
