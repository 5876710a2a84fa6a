#pragma once
// The noise sampling starts from, drawn as the SD3 reference draws it, for every generator of the
// library: sd3_infer.py get_noise() seeds torch's CPU generator with the image's seed and draws
// randn of (1, C, H, W) in float32; with several prompts its "roll" seeds give image i the seed
// seed + i. So the same weights, prompt and seed start from the same noise here and there, and an
// image does not change with the batch it is drawn in.
#include <cstdint>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

namespace diffuse::sampling {

// (n, c, h, w) float32 on the CPU; image i from the seed seed + i.
inline torch::Tensor initial_noise(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, std::uint64_t seed) {
  auto out = torch::empty({n, c, h, w});
  for (std::int64_t i = 0; i < n; ++i) {
    auto gen = at::detail::createCPUGenerator(seed + static_cast<std::uint64_t>(i));
    out[i].copy_(torch::randn({c, h, w}, gen, torch::TensorOptions().dtype(torch::kFloat32)));
  }
  return out;
}

}  // namespace diffuse::sampling
