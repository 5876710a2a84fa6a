#pragma once
// Latent formats (torch-free formulas): the map between the autoencoder's latent and the diffusion
// model's latent space, applied by pipelines, not by callers. SD3 (SD3_FACTS (c)): model space
// z = (vae_z - 0.0609) * 1.5305; decoding takes vae_z = z / 1.5305 + 0.0609.
#include <string_view>

namespace diffuse::autoencoder {

struct SD3LatentFormat {
  static constexpr std::string_view name = "sd3";
  double scale = 1.5305, shift = 0.0609;
  template <class T> T process_in(const T& vae_latent) const { return T((vae_latent - shift) * scale); }
  template <class T> T process_out(const T& model_latent) const { return T(model_latent / scale + shift); }
};

struct IdentityLatentFormat {
  static constexpr std::string_view name = "identity";
  template <class T> T process_in(const T& z) const { return z; }
  template <class T> T process_out(const T& z) const { return z; }
};

}  // namespace diffuse::autoencoder
