#pragma once
// A label-free grid of a batch of image tensors (nearest-neighbour upscaled, 2-pixel gutters), for
// sample sheets.
#include <cstring>
#include <vector>

#include <torch/types.h>

#include "diffuse/io/image_tensor.hpp"
#include "diffuse/io/png.hpp"

namespace diffuse::pipeline {

using io::from_rgb;
using io::to_rgb;

inline io::RGBImage image_grid(const torch::Tensor& batch, int columns, int scale = 1) {
  const auto n = batch.size(0), h = batch.size(2) * scale, w = batch.size(3) * scale;
  const std::int64_t cols = std::max<std::int64_t>(1, std::min<std::int64_t>(columns, n)), rows = (n + cols - 1) / cols;
  const std::int64_t gap = 2;
  io::RGBImage out({static_cast<std::size_t>(rows * (h + gap) + gap), static_cast<std::size_t>(cols * (w + gap) + gap), 3});
  out.fill(255);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto img = to_rgb(batch[i]);
    const auto y0 = gap + (i / cols) * (h + gap), x0 = gap + (i % cols) * (w + gap);
    for (std::int64_t y = 0; y < h; ++y)
      for (std::int64_t x = 0; x < w; ++x)
        for (int k = 0; k < 3; ++k)
          out(static_cast<std::size_t>(y0 + y), static_cast<std::size_t>(x0 + x), static_cast<std::size_t>(k)) =
              img(static_cast<std::size_t>(y / scale), static_cast<std::size_t>(x / scale), static_cast<std::size_t>(k));
  }
  return out;
}

}  // namespace diffuse::pipeline
