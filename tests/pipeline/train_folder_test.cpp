// The model trainer beyond the shapes world: a new MM-DiT trained on SD3's frozen text stack and
// VAE (a tiny all-in-one checkpoint written by the test) over an image folder in two aspect-ratio
// buckets, and the shapes pixel recipe on the same folder through the command line. The loss
// falls, runs resume with the same cache, the trained folder generates at a bucket's shape, and
// bad input exits 2.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>

#include <torch/torch.h>

#include "diffuse/pipeline/trained_model.hpp"
#include "diffuse/training/trainer.hpp"
#include "pipeline/checker_folder.hpp"
#include "pipeline/tiny_sd3.hpp"
#include "test_util.hpp"

namespace t_train_folder {

using namespace diffuse;
using Catch::Matchers::Contains;

bool logged(const std::vector<std::string>& lines, const std::string& part) {
  return std::any_of(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(part) != std::string::npos; });
}

std::size_t files_in(const std::filesystem::path& d) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(d)) ++n;
  return n;
}

TEST_CASE("Trainer<SD3TextStackRecipe> trains a new MM-DiT on SD3's frozen text stack and VAE over an image folder in buckets",
          "[pipeline][training][folder]") {
  test::TinySD3 m;
  test::TempDir work;
  const auto data = work / "data", out = work / "run";
  test::write_checker_folder(data);

  auto c = training::TrainConfig::shapes_default();
  c.model = {.depth = 2, .hidden = 64, .heads = 1, .patch = 2, .in_channels = 0, .out_channels = 0, .adm_in = 0,
             .context_in = 0, .pos_embed_max_size = 2, .mlp_ratio = 2.0, .qk_norm = true, .x_self_attn_layers = {}};
  c.text_stack = {.clip_l = m.all(), .clip_g = m.all(), .t5 = m.all(), .tokenizers = m.tok(), .t5_length = 77};
  c.autoencoder_weights = m.all();
  c.data = data.string();
  c.image_size = 64;  // buckets of ~64^2 pixels on the 16-pixel grid (VAE factor 8 x patch 2)
  c.batch = 4, c.lr = 2e-3, c.warmup_steps = 5, c.steps = 60, c.precision = "f32", c.workers = 1;
  c.validate_every = 0, c.checkpoint_minutes = 0, c.validation_examples = 4, c.sample_steps = 2, c.log_every = 20;
  c.drop_rate = 0.2;

  std::vector<std::string> lines;
  training::TrainCallbacks cb;
  cb.log = [&](const std::string& s) { lines.push_back(s); };
  double before = 0;
  training::TrainResult r;
  torch::Tensor wide_latents;
  {
    training::Trainer<pipeline::SD3TextStackRecipe> t(out, c, false, cb);
    // Two buckets (the square and the 2:1 one), the uncaptioned image reported by name.
    REQUIRE(t.features().buckets.size() == 2);
    CHECK(t.features().examples() == 8);
    CHECK(logged(lines, "bucket 64x64: 4 images"));
    CHECK(logged(lines, "bucket 96x48: 4 images"));
    CHECK(logged(lines, "uncaptioned.png"));
    // The positional table grew to the widest bucket: 96 / 16 = 6 patches.
    CHECK(t.config().model.pos_embed_max_size == 6);
    CHECK(t.config().model.context_in == m.mmdit->config().context_in);  // the tiny T5's width
    CHECK(t.sheet_prompts().size() == 8);  // the folder's captions
    for (const auto& b : t.features().buckets)
      if (b.bucket.width == 96) wide_latents = b.latents.clone();
    before = t.validation_loss().first;
    r = t.run();
  }
  INFO("validation loss " << before << " -> " << r.val_loss);
  CHECK(r.steps == 60);
  CHECK(r.val_loss < 0.8 * before);
  CHECK(files_in(out / "cache") == 1);
  {
    const auto saved = load_config<training::TrainConfig>(out / "config.json", training::TrainConfig::shapes_default());
    CHECK(saved.text_stack.t5 == m.all());
    CHECK(saved.model.pos_embed_max_size == 6);
    CHECK(saved.data == data.string());
  }

  // Resumed to a longer budget: the same cache file, read back bucket for bucket.
  c.steps = 70;
  lines.clear();
  {
    training::Trainer<pipeline::SD3TextStackRecipe> t(out, c, true, cb);
    CHECK(t.step() == 60);
    for (const auto& b : t.features().buckets)
      if (b.bucket.width == 96) CHECK(torch::equal(b.latents, wide_latents));
    CHECK(t.run().steps == 70);
  }
  CHECK(files_in(out / "cache") == 1);

  // The trained folder generates, at a bucket's shape too.
  pipeline::TrainedModel<pipeline::SD3TextStackRecipe> model(out);
  CHECK(model.step() == 70);
  pipeline::GenerateOptions g;
  g.steps = 2, g.cfg = 2.0, g.width = 96, g.height = 48;
  const auto img = model.generate({"a red checkerboard"}, g);
  CHECK(img.sizes() == torch::IntArrayRef({1, 3, 48, 96}));
  CHECK(torch::isfinite(img).all().item<bool>());

  // A text stack naming no encoder is refused by what is missing.
  auto none = c;
  none.text_stack = {.clip_l = "", .clip_g = "", .t5 = "", .tokenizers = "", .t5_length = 77};
  CHECK_THROWS_WITH((training::Trainer<pipeline::SD3TextStackRecipe>(work / "none", none, false)), Contains("text_stack names no encoder"));
}

TEST_CASE("diffuse train --data DIR trains the shapes recipe on an image folder; bad input exits 2", "[pipeline][training][folder][cli]") {
  test::TempDir work;
  const auto data = work / "data", out = work / "run";
  test::write_checker_folder(data);
  auto res = test::run_cli("train --data " + data.string() + " --out " + out.string() + " --steps 12 --batch 4 --seed 3");
  INFO(res.err);
  REQUIRE(res.exit_code == 0);
  CHECK_THAT(res.err, Contains("8 captioned images, 1 files skipped"));
  CHECK_THAT(res.err, Contains("positional table 8 -> "));
  CHECK_THAT(res.out, Contains("trained 12 steps"));
  const auto saved = load_config<training::TrainConfig>(out / "config.json", training::TrainConfig::shapes_default());
  CHECK(saved.data == data.string());
  CHECK(saved.batch == 4);
  CHECK(saved.seed == 3);
  res = test::run_cli("sample --checkpoint " + out.string() + " --prompt \"a blue checkerboard\" --steps 2 --out " +
                      (work / "s.png").string());
  INFO(res.err);
  CHECK(res.exit_code == 0);
  CHECK(std::filesystem::is_regular_file(work / "s.png"));

  res = test::run_cli("train --out " + out.string() + " --resume --data " + data.string());
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("only --steps / --minutes"));
  std::filesystem::create_directories(work / "empty");
  res = test::run_cli("train --data " + (work / "empty").string() + " --out " + (work / "e").string() + " --steps 2");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("no captioned images"));
  res = test::run_cli("train --data " + (work / "missing").string() + " --out " + (work / "m").string() + " --steps 2");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("not a folder of images"));
  res = test::run_cli("train --recipe sd3-text-stack --data " + data.string() + " --out " + (work / "t").string() + " --steps 2");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("give --encoders MODEL"));
}

}  // namespace t_train_folder
