#pragma once
// Aspect-ratio buckets (SD3 trains at mixed aspect ratios: paper section 5.3.2, "positional
// encodings for varying aspect ratios"; SDXL buckets the same way):
// sizes of about resolution^2 pixels whose sides are multiples of the model's granularity (the
// autoencoder's factor times the patch size), so that every image is trained near its own shape,
// with the positional embedding cropped to the grid, and every batch holds one bucket.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "diffuse/core/error.hpp"
#include "diffuse/io/image_file.hpp"

namespace diffuse::data {

struct Bucket {
  int width = 0, height = 0;
  bool operator==(const Bucket&) const = default;
};

// Widths step, 2 step, ... with each height the multiple of `step` nearest resolution^2 / width,
// kept where the aspect ratio lies within [1 / max_ratio, max_ratio]; the square is always one.
inline std::vector<Bucket> aspect_buckets(int resolution, int step, double max_ratio = 2.0) {
  if (step < 1 || resolution < step || resolution % step != 0)
    throw InputError("aspect buckets: the resolution (" + std::to_string(resolution) + ") must be a positive multiple of " +
                     std::to_string(step));
  if (!(max_ratio >= 1)) throw InputError("aspect buckets: max_ratio must be at least 1");
  const double area = static_cast<double>(resolution) * resolution;
  std::vector<Bucket> out;
  for (int w = step; w <= resolution * max_ratio + step; w += step) {
    const int h = std::max(step, static_cast<int>(std::lround(area / w / step)) * step);
    const double r = static_cast<double>(w) / h;
    if (r > max_ratio + 1e-9 || r < 1 / max_ratio - 1e-9) continue;
    if (std::find(out.begin(), out.end(), Bucket{w, h}) == out.end()) out.push_back({w, h});
  }
  if (std::find(out.begin(), out.end(), Bucket{resolution, resolution}) == out.end()) out.push_back({resolution, resolution});
  std::sort(out.begin(), out.end(), [](const Bucket& a, const Bucket& b) { return a.width < b.width; });
  return out;
}

// The bucket whose aspect ratio is nearest to width / height on a log scale (ties: the narrower).
inline std::size_t nearest_bucket(const std::vector<Bucket>& buckets, int width, int height) {
  if (buckets.empty()) throw InputError("aspect buckets: none to choose from");
  const double r = std::log(static_cast<double>(width) / height);
  std::size_t best = 0;
  double best_d = 1e300;
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    const double d = std::abs(std::log(static_cast<double>(buckets[i].width) / buckets[i].height) - r);
    if (d < best_d - 1e-12) best = i, best_d = d;
  }
  return best;
}

// The centred crop of `image` with the bucket's aspect ratio, resized to the bucket.
inline io::RGBImage fit_to_bucket(const io::RGBImage& image, const Bucket& b) {
  const int h = static_cast<int>(image.shape(0)), w = static_cast<int>(image.shape(1));
  int cw = w, ch = h;
  if (static_cast<long>(w) * b.height > static_cast<long>(h) * b.width)  // wider than the bucket
    cw = std::max(1, static_cast<int>(std::lround(static_cast<double>(h) * b.width / b.height)));
  else
    ch = std::max(1, static_cast<int>(std::lround(static_cast<double>(w) * b.height / b.width)));
  const auto cropped = (cw == w && ch == h) ? image : io::crop_image(image, (w - cw) / 2, (h - ch) / 2, cw, ch);
  return io::resize_image(cropped, b.width, b.height);
}

}  // namespace diffuse::data
