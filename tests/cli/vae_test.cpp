// `diffuse vae encode|decode` and `diffuse forward` on autoencoder weights; with the parity data,
// the reference vae_a tensors (reads ../shared/testdata/sd3ref/vae_a.{weights,io}.safetensors).
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>

#include <torch/torch.h>

#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/pipeline/images.hpp"
#include "test_util.hpp"

namespace t_cli_vae {

using namespace diffuse;
using Catch::Matchers::Contains;

TEST_CASE("diffuse vae encode and decode round-trip shapes through files", "[cli][autoencoder]") {
  autoencoder::KLAutoencoder vae(autoencoder::KLAutoencoderConfig{32, {1, 1, 2, 2}, 1, 3, 16, 32});
  test::TempDir dir;
  std::vector<std::pair<std::string, torch::Tensor>> w;
  for (const auto& p : vae->named_parameters(true)) w.emplace_back("first_stage_model." + p.key(), p.value());
  io::save_safetensors(dir / "vae.safetensors", w);
  io::RGBImage img({24, 40, 3});
  img.fill(200);
  io::write_png(dir / "in.png", img);
  const std::string wflag = " --weights " + (dir / "vae.safetensors").string();
  REQUIRE(test::run_cli("vae encode" + wflag + " " + (dir / "in.png").string() + " --out " + (dir / "z.safetensors").string()).exit_code == 0);
  const auto z = io::load_safetensors((dir / "z.safetensors").string());
  CHECK(z["latent"].sizes() == torch::IntArrayRef{1, 16, 3, 5});
  CHECK(torch::allclose(z["latent"], (z["enc_mean"] - 0.0609) * 1.5305));  // the SD3 latent format
  REQUIRE(test::run_cli("vae decode" + wflag + " " + (dir / "z.safetensors").string() + " --out " + (dir / "out.png").string()).exit_code == 0);
  const auto out = io::read_png(dir / "out.png");
  CHECK(out.shape()[0] == 24);
  CHECK(out.shape()[1] == 40);
  io::RGBImage odd({20, 40, 3});
  io::write_png(dir / "odd.png", odd);
  const auto bad = test::run_cli("vae encode" + wflag + " " + (dir / "odd.png").string() + " --out " + (dir / "x.safetensors").string());
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Contains("not divisible by the downsampling factor 8"));
}

TEST_CASE("diffuse vae train writes a model that encode reads with its group count", "[cli][autoencoder]") {
  test::TempDir dir;
  {
    std::ofstream cfg(dir / "c.json");
    cfg << R"({"model": {"ch_mult": [1, 2], "z_channels": 4, "norm_groups": 8}, "image_size": 16, "batch": 4,
               "train_images": 8, "eval_images": 2, "warmup_steps": 2, "grad_clip": 1.0, "precision": "f32"})";
  }
  const auto out = dir / "vae";
  const auto r = test::run_cli("vae train --config " + (dir / "c.json").string() + " --steps 3 --out " + out.string());
  REQUIRE(r.exit_code == 0);
  const auto w = (out / "vae.safetensors").string();
  CHECK(io::SafetensorsFile(w).metadata().at("diffuse.vae_norm_groups") == "8");
  auto vae = autoencoder::load_autoencoder(w);
  CHECK(vae->config().norm_groups == 8);
  CHECK(vae->config().z_channels == 4);
  std::ifstream m(out / "metrics.json");
  const std::string metrics((std::istreambuf_iterator<char>(m)), std::istreambuf_iterator<char>());
  CHECK_THAT(metrics, Contains("\"loss_per_100_steps\": []"));  // 3 steps: no full window of 100
  CHECK_THAT(metrics, Contains("\"warmup_steps\": 2"));
  io::RGBImage img({16, 16, 3});
  img.fill(90);
  io::write_png(dir / "in.png", img);
  const std::string enc = "vae encode --weights " + w + " " + (dir / "in.png").string() + " --out " + (dir / "z.safetensors").string();
  REQUIRE(test::run_cli(enc + " --latent-format identity").exit_code == 0);
  torch::NoGradGuard g;
  const auto x = pipeline::from_rgb(io::read_png(dir / "in.png")).unsqueeze(0);
  CHECK(torch::allclose(io::load_safetensors((dir / "z.safetensors").string())["enc_mean"], vae->encode(x).mean, 1e-5, 1e-6));
  // a bad group count in the config is refused, naming the field
  {
    std::ofstream cfg(dir / "bad.json");
    cfg << R"({"model": {"norm_groups": 5}})";
  }
  const auto bad = test::run_cli("vae train --config " + (dir / "bad.json").string() + " --steps 1 --out " + (dir / "b").string());
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Contains("norm_groups"));
}

#ifdef DIFFUSE_TESTDATA_DIR
TEST_CASE("diffuse forward on the reference autoencoder writes the vae_a tensors", "[cli][autoencoder][parity]") {
  const std::string d = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
  test::TempDir dir;
  REQUIRE(test::run_cli("forward --weights " + d + "vae_a.weights.safetensors --inputs " + d + "vae_a.io.safetensors --out " +
                        (dir / "o.safetensors").string())
              .exit_code == 0);
  const auto ref = io::load_safetensors(d + "vae_a.io.safetensors");
  const auto got = io::load_safetensors((dir / "o.safetensors").string());
  for (const char* key : {"enc_moments", "enc_mean", "enc_logvar", "enc_std", "enc_sample", "enc_latent", "latent_scaled", "image", "image_01"}) {
    INFO(key);
    CHECK((got[key] - ref[key]).abs().max().item<double>() <= 2e-5 * std::max(1.0, ref[key].abs().max().item<double>()));
  }
}
#endif

}  // namespace t_cli_vae
