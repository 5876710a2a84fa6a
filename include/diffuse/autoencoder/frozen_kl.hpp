#pragma once
// The autoencoder slot of a pipeline with a frozen KL autoencoder (SD3's): encode takes the
// posterior mean and applies the latent format, decode undoes it, so callers only ever see the
// diffusion model's latent space (SD3_FACTS (c)). Weights come from a file (the SD3 release or
// `diffuse vae train`); the fingerprint is the file's content, for cache keys.
#include <string>
#include <string_view>

#include <torch/types.h>

#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/autoencoder/latent_format.hpp"
#include "diffuse/core/hash.hpp"

namespace diffuse::autoencoder {

template <class Format = SD3LatentFormat>
class FrozenKL {
 public:
  static constexpr std::string_view name = "kl";
  using format_type = Format;
  explicit FrozenKL(const std::string& weights) : vae_(nullptr) {
    if (weights.empty())
      throw InputError("the pipeline's autoencoder is a KL autoencoder: give its weights (autoencoder_weights; "
                       "`diffuse vae train` makes one for the shapes world)");
    vae_ = load_autoencoder(weights, torch::kFloat32);  // released files store float16: encode float32 images
    vae_->eval();
    for (auto& p : vae_->parameters()) p.set_requires_grad(false);
    fingerprint_ = std::string(Format::name) + ":" + Fingerprint().add_file(weights).hex();
  }
  int latent_channels() const { return vae_->config().z_channels; }
  int factor() const { return vae_->config().factor(); }
  const std::string& fingerprint() const { return fingerprint_; }
  torch::Tensor encode(const torch::Tensor& images) const {
    torch::NoGradGuard g;
    return format_.process_in(vae_->encode(images).mean);
  }
  torch::Tensor decode(const torch::Tensor& latents) const {
    torch::NoGradGuard g;
    return vae_->decode(format_.process_out(latents));
  }

 private:
  mutable KLAutoencoder vae_;
  Format format_{};
  std::string fingerprint_;
};

}  // namespace diffuse::autoencoder
