#pragma once
// The autoencoder slot of a pipeline when diffusion runs on pixels: images in [-1, 1] are the
// latents (channels 3, factor 1). The shapes world's default model uses it: at 32 x 32 pixels an
// 8x autoencoder leaves 4 x 4 latents that cannot hold a 4-pixel triangle (docs/pipeline.md).
#include <string>
#include <string_view>

#include <torch/types.h>

namespace diffuse::autoencoder {

struct PixelSpace {
  static constexpr std::string_view name = "pixels";
  PixelSpace() = default;
  explicit PixelSpace(const std::string& /*weights: none*/) {}
  int latent_channels() const { return 3; }
  int factor() const { return 1; }
  std::string fingerprint() const { return "pixels"; }
  torch::Tensor encode(const torch::Tensor& images) const { return images; }
  torch::Tensor decode(const torch::Tensor& latents) const { return latents; }
};

}  // namespace diffuse::autoencoder
