#pragma once
// The examples' stand-in for a released checkpoint when run without arguments (as ctest runs them):
// a 2-block MM-DiT and a narrow VAE with random weights in the all-in-one layout, no text encoders
// (the generator then conditions on zeros, as for a dropped encoder). Its images are noise.
#include <filesystem>
#include <string>

#include <diffuse/autoencoder/kl_autoencoder.hpp>
#include <diffuse/backbone/mmdit.hpp>
#include <diffuse/io/mmdit_checkpoint.hpp>
#include <diffuse/io/safetensors.hpp>

inline std::string write_tiny_model(const std::filesystem::path& dir, const std::string& name) {
  using namespace diffuse;
  auto cfg = backbone::MMDiTConfig::scaling(2);
  cfg.pos_embed_max_size = 16;
  backbone::MMDiT mmdit(cfg);
  autoencoder::KLAutoencoder vae(autoencoder::KLAutoencoderConfig{32, {1, 1, 1, 1}, 1, 3, 16, 32});
  auto tensors = io::mmdit_tensors(mmdit, io::KeyLayout::Original, "model.diffusion_model.");
  for (auto& kv : autoencoder::autoencoder_tensors(vae, false, "first_stage_model.")) tensors.push_back(kv);
  const auto path = (dir / name).string();
  io::save_safetensors(path, tensors);
  return path;
}
