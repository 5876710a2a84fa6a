#pragma once
// Image tensors <-> RGB images: (3, H, W) float in [-1, 1] <-> (H, W, 3) uint8.
#include <cstdint>
#include <cstring>

#include <torch/types.h>

#include "diffuse/io/png.hpp"

namespace diffuse::io {

inline RGBImage to_rgb(const torch::Tensor& x) {  // (3, H, W) in [-1, 1]
  const auto u8 = ((x.detach().to(torch::kCPU, torch::kFloat32).clamp(-1, 1) + 1) * 127.5).round().to(torch::kUInt8).permute({1, 2, 0}).contiguous();
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
