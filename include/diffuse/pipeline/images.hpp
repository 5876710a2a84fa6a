#pragma once
// Image tensors <-> RGB images: (B, 3, H, W) in [-1, 1] <-> (H, W, 3) uint8, and a labelled-free
// grid of a batch (nearest-neighbour upscaled, 2-pixel gutters) for sample sheets.
#include <cstring>
#include <vector>

#include <torch/types.h>

#include "diffuse/io/png.hpp"

namespace diffuse::pipeline {

inline io::RGBImage to_rgb(const torch::Tensor& x) {  // (3, H, W) in [-1, 1]
  const auto u8 = ((x.detach().to(torch::kCPU, torch::kFloat32).clamp(-1, 1) + 1) * 127.5).round().to(torch::kUInt8).permute({1, 2, 0}).contiguous();
  io::RGBImage img({static_cast<std::size_t>(u8.size(0)), static_cast<std::size_t>(u8.size(1)), 3});
  std::memcpy(img.data(), u8.data_ptr(), static_cast<std::size_t>(u8.numel()));
  return img;
}

inline torch::Tensor from_rgb(const io::RGBImage& img) {  // -> (3, H, W) in [-1, 1]
  const auto h = static_cast<std::int64_t>(img.shape()[0]), w = static_cast<std::int64_t>(img.shape()[1]);
  auto t = torch::from_blob(const_cast<std::uint8_t*>(img.data()), {h, w, 3}, torch::kUInt8);
  return t.permute({2, 0, 1}).to(torch::kFloat32) / 127.5 - 1.0;
}

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
