#pragma once
// Image tensors <-> RGB images: (3, H, W) float in [-1, 1] <-> (H, W, 3) uint8.
#include <cstdint>
#include <cstring>

#include <torch/types.h>

#include "diffuse/io/png.hpp"

namespace diffuse::io {

// How a value in [0, 255] becomes a byte: to the nearest, or cut towards zero as the SD3.5
// reference's vae_decode does (numpy astype(uint8) of 255 (x + 1) / 2), which `diffuse generate`
// follows so that its PNGs equal the reference's.
enum class Quantize { Nearest, Truncate };

inline RGBImage to_rgb(const torch::Tensor& x, Quantize q = Quantize::Nearest) {  // (3, H, W) in [-1, 1]
  const auto f = x.detach().to(torch::kCPU, torch::kFloat32);
  const auto scaled = q == Quantize::Nearest ? ((f.clamp(-1, 1) + 1) * 127.5).round() : (((f + 1) / 2).clamp(0, 1) * 255).trunc();
  const auto u8 = scaled.to(torch::kUInt8).permute({1, 2, 0}).contiguous();
  RGBImage img({static_cast<std::size_t>(u8.size(0)), static_cast<std::size_t>(u8.size(1)), 3});
  std::memcpy(img.data(), u8.data_ptr(), static_cast<std::size_t>(u8.numel()));
  return img;
}

inline torch::Tensor from_rgb(const RGBImage& img) {  // -> (3, H, W) in [-1, 1]
  const auto h = static_cast<std::int64_t>(img.shape()[0]), w = static_cast<std::int64_t>(img.shape()[1]);
  auto t = torch::from_blob(const_cast<std::uint8_t*>(img.data()), {h, w, 3}, torch::kUInt8);
  return t.permute({2, 0, 1}).to(torch::kFloat32) / 127.5 - 1.0;
}

}  // namespace diffuse::io
