// The KL autoencoder: the SD3 preset's key names and shapes, encode/decode shapes for non-square
// sizes, clear errors; and parity with the reference vae_a case (reads
// ../shared/testdata/sd3ref/vae_a.weights.safetensors and vae_a.io.safetensors in place).
#include <catch2/catch.hpp>

#include <iostream>

#include <torch/torch.h>

#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/autoencoder/latent_format.hpp"
#include "test_util.hpp"

namespace t_kl_autoencoder {

using namespace diffuse;
using namespace diffuse::autoencoder;
using Catch::Matchers::Contains;

TEST_CASE("the SD3 preset has the SD3 VAE's keys and shapes", "[autoencoder]") {
  KLAutoencoder vae(KLAutoencoderConfig::sd3());
  std::map<std::string, std::vector<std::int64_t>> keys;
  for (const auto& p : vae->named_parameters(true)) keys[p.key()] = p.value().sizes().vec();
  // SD3_FACTS (c)
  CHECK(keys.at("encoder.conv_in.weight") == std::vector<std::int64_t>{128, 3, 3, 3});
  CHECK(keys.at("encoder.conv_out.weight") == std::vector<std::int64_t>{32, 512, 3, 3});
  CHECK(keys.at("decoder.conv_in.weight") == std::vector<std::int64_t>{512, 16, 3, 3});
  CHECK(keys.at("decoder.conv_out.weight") == std::vector<std::int64_t>{3, 128, 3, 3});
  CHECK(keys.at("decoder.mid.attn_1.q.weight") == std::vector<std::int64_t>{512, 512, 1, 1});
  CHECK(keys.count("encoder.down.2.downsample.conv.weight") == 1);
  CHECK(keys.count("encoder.down.3.downsample.conv.weight") == 0);
  CHECK(keys.count("decoder.up.1.upsample.conv.weight") == 1);
  CHECK(keys.count("decoder.up.0.upsample.conv.weight") == 0);
  CHECK(keys.count("decoder.up.3.block.2.conv1.weight") == 1);  // decoder: num_res_blocks + 1
  CHECK(keys.count("encoder.down.1.block.0.nin_shortcut.weight") == 1);  // 128 -> 256
  CHECK(keys.count("encoder.down.3.block.0.nin_shortcut.weight") == 0);  // 512 -> 512
  CHECK(keys.count("quant_conv.weight") == 0);
}

TEST_CASE("encode and decode keep the 8x factor on non-square sizes; bad input is a clear error", "[autoencoder]") {
  KLAutoencoder vae(KLAutoencoderConfig{32, {1, 1, 2, 2}, 1, 3, 16, 32});
  torch::NoGradGuard g;
  const auto d = vae->encode(torch::rand({1, 3, 24, 40}) * 2 - 1);
  CHECK(d.mean.sizes() == torch::IntArrayRef{1, 16, 3, 5});
  CHECK(d.logvar.max().item<float>() <= 20.0f);
  CHECK(vae->decode(d.mean).sizes() == torch::IntArrayRef{1, 3, 24, 40});
  CHECK_THROWS_WITH(vae->encode(torch::rand({1, 3, 20, 40})), Contains("not divisible by the downsampling factor 8"));
  CHECK_THROWS_WITH(vae->encode(torch::rand({1, 4, 24, 40})), Contains("image must be [B, 3, H, W]"));
  CHECK_THROWS_WITH(vae->decode(torch::rand({1, 4, 3, 5})), Contains("latent must be [B, 16, h, w]"));
  CHECK_THROWS_WITH(KLAutoencoderConfig({20, {1}, 1, 3, 16, 32}).validate(), Contains("multiple of norm_groups (32"));
}

TEST_CASE("autoencoder weights load with or without the first_stage_model. prefix and report problems", "[autoencoder]") {
  const KLAutoencoderConfig c{32, {1, 2}, 1, 3, 4, 32};
  KLAutoencoder vae(c);
  test::TempDir dir;
  std::vector<std::pair<std::string, torch::Tensor>> plain, prefixed, broken;
  for (const auto& p : vae->named_parameters(true)) {
    plain.emplace_back(p.key(), p.value());
    prefixed.emplace_back("first_stage_model." + p.key(), p.value());
    if (p.key() != "decoder.conv_out.bias") broken.emplace_back(p.key(), p.value());
  }
  broken.emplace_back("decoder.extra.weight", torch::zeros({1}));
  io::save_safetensors(dir / "plain.safetensors", plain);
  io::save_safetensors(dir / "prefixed.safetensors", prefixed);
  io::save_safetensors(dir / "broken.safetensors", broken);
  const auto x = torch::rand({1, 3, 8, 8});
  torch::NoGradGuard g;
  for (const char* f : {"plain.safetensors", "prefixed.safetensors"}) {
    auto loaded = load_autoencoder((dir / f).string());
    CHECK(loaded->config().ch_mult == c.ch_mult);
    CHECK(loaded->config().z_channels == 4);
    CHECK(torch::equal(loaded->encode(x).mean, vae->encode(x).mean));
  }
  CHECK_THROWS_WITH(load_autoencoder((dir / "broken.safetensors").string()),
                    Contains("missing decoder.conv_out.bias") && Contains("unexpected decoder.extra.weight"));
}

TEST_CASE("the GroupNorm group count is configurable and travels in the file's metadata", "[autoencoder]") {
  const KLAutoencoderConfig c{32, {1, 2}, 1, 3, 4, 8};
  torch::manual_seed(6);
  KLAutoencoder vae(c);
  int norms = 0;
  for (const auto& m : vae->named_modules())
    if (const auto* n = m.value()->as<torch::nn::GroupNormImpl>()) {
      CHECK(n->options.num_groups() == 8);
      ++norms;
    }
  CHECK(norms == 24);  // encoder: 2 blocks x 2, 5 in the middle, norm_out; decoder: 4 blocks x 2, 5, norm_out
  // the group count changes what the model computes (4 channels a group here, 1 with 32)
  torch::manual_seed(6);
  KLAutoencoder sd3_groups(KLAutoencoderConfig{32, {1, 2}, 1, 3, 4, 32});
  torch::NoGradGuard g;
  const auto x = torch::rand({2, 3, 8, 8}) * 2 - 1;
  CHECK(!torch::allclose(sd3_groups->encode(x).mean, vae->encode(x).mean));
  test::TempDir dir;
  io::save_safetensors(dir / "g8.safetensors", autoencoder_tensors(vae, false), autoencoder_metadata(c));
  auto loaded = load_autoencoder((dir / "g8.safetensors").string());
  CHECK(loaded->config().norm_groups == 8);
  CHECK(torch::equal(loaded->encode(x).mean, vae->encode(x).mean));
  // without the entry a file is read with SD3's 32 groups, as the released files are
  io::save_safetensors(dir / "plain.safetensors", autoencoder_tensors(vae, false));
  CHECK(load_autoencoder((dir / "plain.safetensors").string())->config().norm_groups == 32);
  for (const char* bad : {"x", "0", "8x", ""}) {
    io::save_safetensors(dir / "bad.safetensors", autoencoder_tensors(vae, false), {{norm_groups_metadata_key, bad}});
    CHECK_THROWS_WITH(load_autoencoder((dir / "bad.safetensors").string()),
                      Contains("diffuse.vae_norm_groups must be a positive integer"));
  }
  // a group count the width does not divide
  io::save_safetensors(dir / "g3.safetensors", autoencoder_tensors(vae, false), {{norm_groups_metadata_key, "3"}});
  CHECK_THROWS_WITH(load_autoencoder((dir / "g3.safetensors").string()), Contains("multiple of norm_groups (3"));
  CHECK_THROWS_WITH(KLAutoencoderConfig({32, {1}, 1, 3, 4, 0}).validate(), Contains("norm_groups must be positive"));
  CHECK_THROWS_WITH(KLAutoencoderConfig({32, {1, 0}, 1, 3, 4, 32}).validate(), Contains("ch_mult entries must be positive"));
}

TEST_CASE("the diffusers VAE layout: renamed levels, reversed decoder, Linear attention; round trip", "[autoencoder]") {
  CHECK(diffusers_vae_key("decoder.up.3.block.0.nin_shortcut.weight", 4) == "decoder.up_blocks.0.resnets.0.conv_shortcut.weight");
  CHECK(diffusers_vae_key("decoder.up.1.upsample.conv.bias", 4) == "decoder.up_blocks.2.upsamplers.0.conv.bias");
  CHECK(diffusers_vae_key("encoder.down.2.downsample.conv.weight", 4) == "encoder.down_blocks.2.downsamplers.0.conv.weight");
  CHECK(diffusers_vae_key("encoder.down.0.block.1.norm2.weight", 4) == "encoder.down_blocks.0.resnets.1.norm2.weight");
  CHECK(diffusers_vae_key("encoder.mid.block_2.conv1.weight", 4) == "encoder.mid_block.resnets.1.conv1.weight");
  CHECK(diffusers_vae_key("decoder.mid.attn_1.proj_out.weight", 4) == "decoder.mid_block.attentions.0.to_out.0.weight");
  CHECK(diffusers_vae_key("decoder.mid.attn_1.norm.bias", 4) == "decoder.mid_block.attentions.0.group_norm.bias");
  CHECK(diffusers_vae_key("encoder.mid.attn_1.k.weight", 4) == "encoder.mid_block.attentions.0.to_k.weight");
  CHECK(diffusers_vae_key("decoder.norm_out.weight", 4) == "decoder.conv_norm_out.weight");
  CHECK(diffusers_vae_key("decoder.conv_in.weight", 4) == "decoder.conv_in.weight");
  torch::manual_seed(3);
  KLAutoencoder vae(KLAutoencoderConfig{32, {1, 2, 2}, 1, 3, 4, 32});
  test::TempDir dir;
  io::save_safetensors(dir / "diffusers.safetensors", autoencoder_tensors(vae, true));
  io::SafetensorsFile f((dir / "diffusers.safetensors").string());
  CHECK(f.info("decoder.mid_block.attentions.0.to_q.weight").shape == std::vector<std::int64_t>{64, 64});
  CHECK(f.info("decoder.up_blocks.0.resnets.0.conv1.weight").shape == std::vector<std::int64_t>{64, 64, 3, 3});
  auto loaded = load_autoencoder((dir / "diffusers.safetensors").string());
  CHECK(loaded->config().ch_mult == std::vector<int>{1, 2, 2});
  CHECK(loaded->config().num_res_blocks == 1);
  torch::NoGradGuard g;
  const auto z = torch::randn({1, 4, 4, 4});
  CHECK(torch::equal(loaded->decode(z), vae->decode(z)));
  // A missing tensor is named by its diffusers key.
  auto t = autoencoder_tensors(vae, true);
  t.erase(std::remove_if(t.begin(), t.end(), [](const auto& kv) { return kv.first == "decoder.up_blocks.2.resnets.1.conv2.bias"; }), t.end());
  io::save_safetensors(dir / "broken.safetensors", t);
  CHECK_THROWS_WITH(load_autoencoder((dir / "broken.safetensors").string()), Contains("missing decoder.up_blocks.2.resnets.1.conv2.bias"));
}

#ifdef DIFFUSE_TESTDATA_DIR
double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>() / std::max(1.0, b.abs().max().item<double>());
}

TEST_CASE("the autoencoder matches the SD3.5 reference vae_a case", "[autoencoder][parity]") {
  const std::string d = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
  auto vae = load_autoencoder(d + "vae_a.weights.safetensors");
  CHECK(vae->config().ch == 32);
  CHECK(vae->config().ch_mult == std::vector<int>{1, 1, 1, 2});
  CHECK(vae->config().num_res_blocks == 1);
  const auto io = io::load_safetensors(d + "vae_a.io.safetensors");
  torch::NoGradGuard g;
  const SD3LatentFormat fmt;
  double worst = 0;
  auto check = [&](const std::string& name, const torch::Tensor& ours) {
    INFO(name);
    const double e = rel(ours, io[name]);
    CHECK(e <= 2e-5);
    worst = std::max(worst, e);
  };
  check("latent_scaled", fmt.process_out(io["latent"]));
  VAETrace dec;
  const auto image = vae->decode(io["latent_scaled"], &dec);
  check("image", image);
  check("image_01", ((image + 1) / 2).clamp(0, 1));
  check("inter.dec.conv_in", dec.conv_in.narrow(0, 0, 1));
  check("inter.dec.mid.attn_1", dec.mid_attn.narrow(0, 0, 1));
  check("inter.dec.mid.block_2", dec.mid_out.narrow(0, 0, 1));
  for (int i = 1; i <= 3; ++i) check("inter.dec.up" + std::to_string(i) + ".block_out", dec.level_out[i].narrow(0, 0, 1));
  VAETrace enc;
  const auto dist = vae->encode(io["enc_image"], &enc);
  check("enc_moments", torch::cat({dist.mean, vae->encoder->forward(io["enc_image"]).chunk(2, 1)[1]}, 1));
  check("enc_mean", dist.mean);
  check("enc_logvar", dist.logvar);
  check("enc_std", dist.std());
  const auto sample = dist.sample(io["enc_noise"]);
  check("enc_sample", sample);
  check("enc_latent", fmt.process_in(sample));
  check("inter.enc.mid.attn_1", enc.mid_attn.narrow(0, 0, 1));
  check("inter.enc.mid.block_2", enc.mid_out.narrow(0, 0, 1));
  for (int i = 1; i <= 3; ++i) check("inter.enc.down" + std::to_string(i) + ".block_out", enc.level_out[i].narrow(0, 0, 1));
  std::cout << "parity vae_a: worst max|ours - ref| / max(1, max|ref|) = " << worst << "\n";
}

// Reads ../shared/testdata/sd3ref/vae_a.*: the same weights renamed to the diffusers layout decode alike.
TEST_CASE("the reference vae_a weights in the diffusers layout decode as the reference", "[autoencoder][parity]") {
  const std::string d = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
  auto vae = load_autoencoder(d + "vae_a.weights.safetensors");
  test::TempDir dir;
  io::save_safetensors(dir / "vae.safetensors", autoencoder_tensors(vae, true));
  auto diffusers = load_autoencoder((dir / "vae.safetensors").string());
  const auto io = io::load_safetensors(d + "vae_a.io.safetensors");
  torch::NoGradGuard g;
  CHECK(rel(diffusers->decode(io["latent_scaled"]), io["image"]) <= 2e-5);
}
#endif

}  // namespace t_kl_autoencoder

#include "diffuse/autoencoder/tiling.hpp"

namespace t_vae_tiling {

using namespace diffuse;
using namespace diffuse::autoencoder;

TEST_CASE("tiled decoding and encoding agree with the untiled result", "[autoencoder]") {
  torch::manual_seed(21);
  KLAutoencoder vae(KLAutoencoderConfig{32, {1, 1, 2}, 1, 3, 4, 32});  // factor 4
  torch::NoGradGuard g;
  const auto z = torch::randn({1, 4, 24, 20});
  const auto full = vae->decode(z);
  // One tile covering everything is exactly the untiled decode.
  CHECK(torch::allclose(decode_tiled(vae, z, 32, 8), full, 1e-5, 1e-6));
  const auto tiled = decode_tiled(vae, z, 12, 6);
  REQUIRE(tiled.sizes() == full.sizes());
  const double range = (full.max() - full.min()).item<double>();
  const double mean_err = (tiled - full).abs().mean().item<double>() / range;
  // Measured 0.01-0.02 of the output range with random weights (tiles see zero padding and a
  // local middle attention); a seam-free blend stays well below 5%.
  CHECK(mean_err < 0.05);
  const auto x = torch::rand({1, 3, 48, 40}) * 2 - 1;
  const auto e_full = vae->encode(x), e_tiled = encode_tiled(vae, x, 32, 16);
  CHECK(e_tiled.mean.sizes() == e_full.mean.sizes());
  const double enc_err =
      (e_tiled.mean - e_full.mean).abs().mean().item<double>() / (e_full.mean.max() - e_full.mean.min()).item<double>();
  WARN("tiled/untiled mean error relative to range: decode " << mean_err << ", encode " << enc_err);
  CHECK(enc_err < 0.05);
  CHECK_THROWS_AS(encode_tiled(vae, x, 22, 8), InputError);
}

}  // namespace t_vae_tiling

#include "diffuse/training/autoencoder_trainer.hpp"

namespace t_vae_training {

using namespace diffuse;

// A small training run for unit tests: factor 2, width 32, 16 x 16 images, 2 evaluation images.
training::AutoencoderTrainConfig tiny_config(int batch, int steps, int train_images) {
  auto c = training::AutoencoderTrainConfig::shapes_default();
  c.model = {32, {1, 2}, 1, 3, 4, 32};
  c.image_size = 16;
  c.batch = batch;
  c.steps = steps;
  c.train_images = train_images;
  c.eval_images = 2;
  return c;
}

TEST_CASE("training an autoencoder on shapes lowers the loss and reports PSNR and SSIM", "[autoencoder][training]") {
  auto c = tiny_config(8, 40, 64);
  c.eval_images = 8;
  c.lr = 2e-3;
  torch::manual_seed(0);
  autoencoder::KLAutoencoder vae(c.model);
  std::vector<double> losses;
  const auto r = training::train_autoencoder(vae, c, [&](int, double l) { losses.push_back(l); });
  REQUIRE(losses.size() == 40);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += losses[i] / 5, last += losses[35 + i] / 5;
  CHECK(last < 0.7 * first);
  CHECK(r.psnr > 10.0);
  CHECK(r.psnr_held_out > 10.0);
  CHECK(r.ssim_held_out > 0.0);
  CHECK(r.ssim > 0.0);
  CHECK(r.ssim <= 1.0);
  c.loss = "l3";
  CHECK_THROWS_AS(training::train_autoencoder(vae, c), InputError);
  c.loss = "l1";
  c.precision = "f16";
  CHECK_THROWS_AS(training::train_autoencoder(vae, c), InputError);
  // "auto" (the default) runs in the dtype the probe chose and says which.
  c.precision = "auto";
  c.steps = 1;
  const auto ra = training::train_autoencoder(vae, c);
  CHECK((ra.precision == "f32" || ra.precision == "bf16"));
  c.precision = "f32";
  CHECK(training::train_autoencoder(vae, c).precision == "f32");
}

TEST_CASE("the autoencoder's evaluation images are fixed across seeds and never trained on", "[autoencoder][training]") {
  auto c = training::AutoencoderTrainConfig::shapes_default();
  c.image_size = 16;
  c.train_images = 512;
  c.eval_images = 16;
  const auto a = training::autoencoder_eval_images(c);
  c.seed = 7;
  const auto b = training::autoencoder_eval_images(c);
  CHECK(torch::equal(a.unseen, b.unseen));
  CHECK(torch::equal(a.held_out, b.held_out));
  REQUIRE(a.unseen.size(0) == 16);
  CHECK_FALSE(torch::equal(a.unseen, a.held_out));
  // none of them is an image training seed 0 draws (same world, examples 0 .. train_images - 1)
  const auto train = training::shapes_images(c.train_images, c.image_size, 0, data::Split::Train).flatten(1);
  for (const auto& set : {a.unseen, a.held_out}) {
    const auto d = torch::cdist(set.flatten(1), train);  // (16, 512) distances
    CHECK(d.min().item<double>() > 0.0);
  }
  // and they are real pictures of the split: not blank, not all alike
  CHECK(a.unseen.std().item<double>() > 0.1);
  CHECK((a.unseen[0] - a.unseen[1]).abs().max().item<double>() > 0.1);
}

TEST_CASE("bfloat16 autoencoder training computes the float32 loss to bfloat16 accuracy", "[autoencoder][training]") {
  // the reported loss is the first step's, before any update: same weights, same batch
  auto c = tiny_config(8, 1, 16);
  double loss[2];
  for (int i = 0; i < 2; ++i) {
    c.precision = i ? "bf16" : "f32";
    torch::manual_seed(3);
    autoencoder::KLAutoencoder vae(c.model);
    const auto r = training::train_autoencoder(vae, c);
    loss[i] = r.final_loss;
    for (const auto& p : vae->parameters()) CHECK(p.scalar_type() == torch::kFloat32);  // master weights stay f32
  }
  CHECK(loss[0] > 0.05);
  CHECK(std::abs(loss[1] - loss[0]) < 2e-2 * loss[0]);
  CHECK(loss[1] != loss[0]);  // the bf16 path really ran in bf16
}

TEST_CASE("the autoencoder batch split over workers gives the whole batch's gradient", "[autoencoder][training]") {
  const autoencoder::KLAutoencoderConfig cfg{32, {1, 2}, 1, 3, 4, 32};
  torch::manual_seed(5);
  autoencoder::KLAutoencoder vae(cfg);
  const std::int64_t batch = 7;  // not divisible by 2 or 3: shards of unequal size, weighted by their share
  const auto x = torch::rand({batch, 3, 16, 16}) * 2 - 1;
  const auto noise = torch::randn({batch, 4, 8, 8});
  auto loss = [&](autoencoder::KLAutoencoderImpl& m, std::int64_t lo, std::int64_t n) {
    const auto d = m.encode(x.narrow(0, lo, n));
    const auto err = m.decode(d.sample(noise.narrow(0, lo, n))) - x.narrow(0, lo, n);
    return (err.abs().mean() + 0.1 * d.mean.pow(2).mean()) * (static_cast<double>(n) / batch);
  };
  std::vector<double> total;
  std::vector<std::vector<torch::Tensor>> grads;
  for (int workers : {1, 2, 3}) {
    for (auto& p : vae->parameters()) p.mutable_grad() = torch::Tensor();
    training::AutoencoderShards shards(vae, workers, batch);
    CHECK(shards.workers() == workers);
    total.push_back(shards.step(loss));
    grads.emplace_back();
    for (const auto& p : vae->parameters()) {
      REQUIRE(p.grad().defined());
      grads.back().push_back(p.grad().clone());
    }
  }
  for (std::size_t w = 1; w < total.size(); ++w) {
    CHECK(std::abs(total[w] - total[0]) < 1e-6 * total[0]);
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < grads[0].size(); ++i) {
      worst = std::max(worst, (grads[w][i] - grads[0][i]).abs().max().item<double>());
      scale = std::max(scale, grads[0][i].abs().max().item<double>());
    }
    CHECK(scale > 0);
    CHECK(worst <= 1e-5 * scale);  // the same sum in another order
  }
  // more workers than rows: one a row
  CHECK(training::AutoencoderShards(vae, 16, 2).workers() == 2);
}

TEST_CASE("autoencoder training split over workers follows the one-thread run", "[autoencoder][training]") {
  auto c = tiny_config(7, 4, 32);
  c.precision = "f32";
  std::vector<std::vector<double>> losses;
  for (int workers : {1, 2}) {
    c.workers = workers;
    torch::manual_seed(5);
    autoencoder::KLAutoencoder vae(c.model);
    losses.emplace_back();
    training::train_autoencoder(vae, c, [&](int, double l) { losses.back().push_back(l); });
  }
  REQUIRE(losses[1].size() == 4);
  // the first step's loss is the same batch and posterior noise through the same weights
  CHECK(std::abs(losses[1][0] - losses[0][0]) < 1e-5 * losses[0][0]);
  // later ones through weights AdamW moved from gradients summed in another order
  for (int i = 1; i < 4; ++i) CHECK(std::abs(losses[1][i] - losses[0][i]) < 1e-3 * losses[0][i]);
  c.workers = -1;
  autoencoder::KLAutoencoder vae(c.model);
  CHECK_THROWS_AS(training::train_autoencoder(vae, c), InputError);
}

TEST_CASE("autoencoder training on the posterior mean drops the sampling noise", "[autoencoder][training]") {
  // the first loss: the same weights and batch, decoded from the mean or from a sample
  auto c = tiny_config(4, 1, 8);
  c.precision = "f32";
  c.kl_weight = 0;
  double loss[2];
  for (int i = 0; i < 2; ++i) {
    c.posterior = i ? "mean" : "sample";
    torch::manual_seed(4);
    autoencoder::KLAutoencoder vae(c.model);
    loss[i] = training::train_autoencoder(vae, c).final_loss;
    if (i == 0) continue;
    // the mean path is the L1 error of decode(mean) on the step's batch, drawn as training draws it
    torch::manual_seed(4);
    autoencoder::KLAutoencoder fresh(c.model);
    auto gen = at::detail::createCPUGenerator(c.seed);
    const auto idx = torch::randint(c.train_images, {c.batch}, gen, torch::kLong);
    const auto x = training::shapes_images(c.train_images, c.image_size, c.seed, data::Split::Train).index_select(0, idx);
    torch::NoGradGuard g;
    const double expected = (fresh->decode(fresh->encode(x).mean) - x).abs().mean().item<double>();
    CHECK(std::abs(loss[1] - expected) < 1e-6 * expected);
  }
  CHECK(loss[0] != loss[1]);  // at initialisation the posterior's noise (std ~1) changes the decoded image
  c.posterior = "mode";
  autoencoder::KLAutoencoder vae(c.model);
  CHECK_THROWS_AS(training::train_autoencoder(vae, c), InputError);
}

TEST_CASE("autoencoder training warms the rate up and clips the gradient's norm", "[autoencoder][training]") {
  // Adam's first step moves every weight with a gradient by lr * g / (|g| + eps), i.e. by ~lr for
  // any gradient well above eps: the largest move measures the step's rate.
  auto largest_move = [](int warmup, double clip) {
    auto c = tiny_config(4, 1, 8);
    c.precision = "f32";
    c.lr = 1e-3;
    c.warmup_steps = warmup;
    c.grad_clip = clip;
    torch::manual_seed(5);
    autoencoder::KLAutoencoder vae(c.model);
    std::vector<torch::Tensor> before;
    for (const auto& p : vae->parameters()) before.push_back(p.detach().clone());
    training::train_autoencoder(vae, c);
    double m = 0;
    const auto after = vae->parameters();
    for (std::size_t i = 0; i < before.size(); ++i)
      m = std::max(m, (after[i].detach() - before[i]).abs().max().item<double>());
    return m;
  };
  const double plain = largest_move(0, 0);
  CHECK(plain == Approx(1e-3).epsilon(0.01));
  // the first of 4 warm-up steps runs at a quarter of the rate
  CHECK(largest_move(4, 0) == Approx(0.25e-3).epsilon(0.01));
  // a clip far above the gradient's norm changes nothing; one of 1e-8 leaves every entry of the
  // clipped gradient at or below 1e-8 = Adam's eps, which halves the step at most
  CHECK(largest_move(0, 1e6) == plain);
  CHECK(largest_move(0, 1e-8) <= 0.5e-3 * 1.001);
  auto c = tiny_config(4, 1, 8);
  autoencoder::KLAutoencoder vae(c.model);
  c.warmup_steps = -1;
  CHECK_THROWS_AS(training::train_autoencoder(vae, c), InputError);
  c.warmup_steps = 0;
  c.grad_clip = -1;
  CHECK_THROWS_AS(training::train_autoencoder(vae, c), InputError);
}

}  // namespace t_vae_training
