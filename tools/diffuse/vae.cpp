// `diffuse vae encode|decode`: the KL autoencoder on images and latents. Latents in files are in
// the diffusion model's space (the SD3 latent format is applied here, not by the caller).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "command.hpp"
#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/autoencoder/latent_format.hpp"
#include "diffuse/autoencoder/tiling.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/pipeline/images.hpp"
#include "diffuse/training/autoencoder_trainer.hpp"

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

torch::Tensor image_to_tensor(const io::RGBImage& img) { return pipeline::from_rgb(img).unsqueeze(0); }  // (1, 3, H, W)
io::RGBImage tensor_to_image(const torch::Tensor& x) { return pipeline::to_rgb(x[0]); }

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

struct TrainOptions {
  std::string config, out = "out/vae";
  int steps = 0, z_channels = 0;
  double minutes = 0;
  std::uint64_t seed = 0;
  bool seed_set = false;
};

void run_train(const TrainOptions& t) {
  configure_threads();
  auto c = t.config.empty() ? training::AutoencoderTrainConfig::shapes_default()
                            : load_config<training::AutoencoderTrainConfig>(t.config, training::AutoencoderTrainConfig::shapes_default());
  if (t.steps > 0) c.steps = t.steps, c.minutes = 0;
  if (t.minutes > 0) c.minutes = t.minutes;
  if (t.z_channels > 0) c.model.z_channels = t.z_channels;
  if (t.seed_set) c.seed = t.seed;
  torch::manual_seed(c.seed);
  autoencoder::KLAutoencoder vae(c.model);
  std::filesystem::create_directories(t.out);
  const int total = c.minutes > 0 ? 0 : c.steps;
  // the mean training loss of every 100 steps, kept in metrics.json: where runs of one
  // configuration part (docs/autoencoder.md, Table 3)
  std::vector<double> curve;
  double window = 0;
  const auto r = training::train_autoencoder(vae, c, [&](int step, double loss) {
    window += loss;
    if (step % 100 == 0) curve.push_back(window / 100), window = 0;
    if (step % 50 == 0 || step == total)
      std::fprintf(stderr, "\rvae train step %d%s loss %.5f   ", step, total ? ("/" + std::to_string(total)).c_str() : "", loss);
  });
  std::fprintf(stderr, "\n");
  const auto config_text = config_to_json(c).dump();
  auto metadata = autoencoder::autoencoder_metadata(c.model);
  metadata.emplace("diffuse.train_config", config_text);
  io::save_safetensors(std::filesystem::path(t.out) / "vae.safetensors", autoencoder::autoencoder_tensors(vae, false), metadata);
  nlohmann::json m{{"steps", r.steps}, {"seconds", r.seconds}, {"final_loss", r.final_loss}, {"psnr", r.psnr},
                   {"ssim", r.ssim}, {"psnr_held_out", r.psnr_held_out}, {"ssim_held_out", r.ssim_held_out},
                   {"z_channels", c.model.z_channels}, {"precision", r.precision}, {"loss_per_100_steps", curve},
                   {"config", nlohmann::json::parse(config_text)}};
  const std::string text = m.dump(2) + "\n";
  io::AtomicFileWriter mw(std::filesystem::path(t.out) / "metrics.json");
  mw.write(text.data(), text.size());
  mw.commit();
  std::printf("vae: %d steps in %.0f s (%s), loss %.5f; unseen images PSNR %.2f dB, SSIM %.4f; held-out combinations "
              "PSNR %.2f dB, SSIM %.4f -> %s\n", r.steps, r.seconds, r.precision.c_str(), r.final_loss, r.psnr, r.ssim,
              r.psnr_held_out, r.ssim_held_out, t.out.c_str());
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
  auto t = std::make_shared<TrainOptions>();
  auto* train = cmd->add_subcommand("train", "train an autoencoder on the shapes world (writes vae.safetensors, metrics.json)");
  train->add_option("--config", t->config, "AutoencoderTrainConfig JSON (default: the shapes preset)");
  train->add_option("--out", t->out, "output directory")->capture_default_str();
  train->add_option("--steps", t->steps, "training steps (overrides the config)");
  train->add_option("--minutes", t->minutes, "train for this long instead of a step count");
  train->add_option("--z-channels", t->z_channels, "latent channels (overrides the config)");
  train->add_option("--seed", t->seed, "seed (overrides the config)")->each([t](const std::string&) { t->seed_set = true; });
  train->callback([t] {
    require_one_process("vae train");
    run_train(*t);
  });
}

}  // namespace diffuse::cli
