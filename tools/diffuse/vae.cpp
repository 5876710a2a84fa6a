// `diffuse vae encode|decode`: the KL autoencoder on images and latents. Latents in files are in
// the diffusion model's space (the SD3 latent format is applied here, not by the caller).
#include <cstring>
#include <iostream>
#include <memory>
#include <string>

#include "command.hpp"
#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/autoencoder/latent_format.hpp"
#include "diffuse/autoencoder/tiling.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/io/png.hpp"

namespace diffuse::cli {
namespace {

struct VaeOptions {
  std::string weights, input, out, format = "sd3";
  bool tiled = false, sample = false;
  std::uint64_t seed = 0;
};

double latent_scale(const std::string& f) {
  if (f != "sd3" && f != "identity") throw InputError("--latent-format must be sd3 or identity");
  return f == "sd3" ? 1.0 : 0.0;
}

torch::Tensor image_to_tensor(const io::RGBImage& img) {  // (1, 3, H, W) in [-1, 1]
  const auto h = static_cast<std::int64_t>(img.shape()[0]), w = static_cast<std::int64_t>(img.shape()[1]);
  auto t = torch::from_blob(const_cast<std::uint8_t*>(img.data()), {h, w, 3}, torch::kUInt8).clone();
  return t.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32) / 127.5 - 1.0;
}

io::RGBImage tensor_to_image(const torch::Tensor& x) {  // (1, 3, H, W) in [-1, 1]
  const auto u8 = ((x[0].clamp(-1, 1) + 1) * 127.5).round().to(torch::kUInt8).permute({1, 2, 0}).contiguous();
  io::RGBImage img({static_cast<std::size_t>(u8.size(0)), static_cast<std::size_t>(u8.size(1)), 3});
  std::memcpy(img.data(), u8.data_ptr(), static_cast<std::size_t>(u8.numel()));
  return img;
}

void run_encode(const VaeOptions& o) {
  configure_threads();
  const bool sd3 = latent_scale(o.format) > 0;
  auto vae = autoencoder::load_autoencoder(o.weights);
  torch::NoGradGuard g;
  const auto x = image_to_tensor(io::read_png(o.input));
  const auto d = o.tiled ? autoencoder::encode_tiled(vae, x) : vae->encode(x);
  torch::Tensor z = d.mean;
  if (o.sample) {
    auto gen = at::detail::createCPUGenerator(o.seed);
    z = d.sample(torch::randn(d.mean.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32)));
  }
  const auto latent = sd3 ? autoencoder::SD3LatentFormat{}.process_in(z) : z;
  io::save_safetensors(o.out, {{"latent", latent}, {"enc_mean", d.mean}, {"enc_logvar", d.logvar}},
                       {{"latent_format", o.format}, {"weights", o.weights}});
  std::cerr << "wrote latent " << latent.sizes() << " to " << o.out << "\n";
}

void run_decode(const VaeOptions& o) {
  configure_threads();
  const bool sd3 = latent_scale(o.format) > 0;
  auto vae = autoencoder::load_autoencoder(o.weights);
  io::SafetensorsFile f(o.input);
  const auto latent = io::load_tensor(f, "latent", {torch::kFloat32});
  torch::NoGradGuard g;
  const auto z = sd3 ? autoencoder::SD3LatentFormat{}.process_out(latent) : latent;
  const auto x = o.tiled ? autoencoder::decode_tiled(vae, z) : vae->decode(z);
  io::write_png(o.out, tensor_to_image(x), {{"Software", "diffuse vae decode"}});
  std::cerr << "wrote " << o.out << "\n";
}

}  // namespace

void add_vae(CLI::App& app) {
  auto* cmd = app.add_subcommand("vae", "Encode images to latents and decode latents to images with a KL autoencoder");
  cmd->require_subcommand(1);
  auto o = std::make_shared<VaeOptions>();
  auto common = [&](CLI::App* sub) {
    sub->add_option("--weights", o->weights, "autoencoder weights (SD3 layout, with or without first_stage_model.)")->required();
    sub->add_option("--out", o->out, "output file")->required();
    sub->add_option("--latent-format", o->format, "sd3 (scale 1.5305, shift 0.0609) or identity")->capture_default_str();
    sub->add_flag("--tiled", o->tiled, "process in overlapping tiles (large images)");
  };
  auto* enc = cmd->add_subcommand("encode", "PNG -> latent (.safetensors: latent, enc_mean, enc_logvar)");
  common(enc);
  enc->add_option("image", o->input, "input PNG (size divisible by the factor, 8 for SD3)")->required();
  enc->add_flag("--sample", o->sample, "draw from the latent distribution instead of taking its mean");
  enc->add_option("--seed", o->seed, "seed for --sample")->capture_default_str();
  enc->callback([o] { run_encode(*o); });
  auto* dec = cmd->add_subcommand("decode", "latent (.safetensors with 'latent') -> PNG");
  common(dec);
  dec->add_option("latent", o->input, "input .safetensors")->required();
  dec->callback([o] { run_decode(*o); });
}

}  // namespace diffuse::cli
