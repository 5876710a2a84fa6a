// LoRA fine-tuning end to end on a tiny SD3 all-in-one checkpoint written by the test and an image
// folder of 8 images (two aspect-ratio buckets) written by the test: the fit loss falls, the LoRA
// files (both layouts) load in the generator and change the image, strength 0 is the base image,
// runs resume, and the command line refuses bad input with exit code 2.
#include <catch2/catch.hpp>

#include <fstream>

#include <torch/torch.h>

#include "diffuse/io/png.hpp"
#include "diffuse/data/image_folder.hpp"
#include "diffuse/pipeline/sd3_generator.hpp"
#include "diffuse/pipeline/trained_model.hpp"
#include "diffuse/training/lora_trainer.hpp"
#include "pipeline/checker_folder.hpp"
#include "pipeline/tiny_sd3.hpp"
#include "test_util.hpp"

namespace t_finetune {

using namespace diffuse;
using Catch::Matchers::Contains;

static_assert(training::LoraBase<pipeline::SD3Generator>);
static_assert(training::LoraBase<pipeline::TrainedModel<pipeline::SD3PixelRecipe>>);
static_assert(training::LoraBase<pipeline::TrainedModel<pipeline::SD3Recipe>>);

pipeline::GenerateRequest request() {
  pipeline::GenerateRequest r;
  r.prompts = {"a red checkerboard"};
  r.width = r.height = 64;
  r.steps = 3;
  r.seed = 5;
  return r;
}

TEST_CASE("LoRA fine-tuning of a tiny SD3 checkpoint on an image folder: the loss falls, the LoRA loads and resumes",
          "[pipeline][finetune][lora]") {
  test::TinySD3 m;
  test::TempDir work;
  const auto data = work / "data", out = work / "lora";
  test::write_checker_folder(data);
  pipeline::SD3ModelFiles tok;
  tok.tokenizers = m.tok();
  const auto files = pipeline::find_sd3_model(m.all(), tok);
  pipeline::SD3GeneratorOptions f32;
  f32.dtype = torch::kFloat32;

  auto c = training::LoraTrainConfig::defaults();
  c.rank = 4, c.lr = 1e-2, c.steps = 60, c.batch = 2, c.targets = {"all-linear"}, c.resolution = 64, c.checkpoint_every = 0, c.log_every = 20;
  std::vector<std::string> lines;
  training::TrainCallbacks cb;
  cb.log = [&](const std::string& s) { lines.push_back(s); };
  training::LoraTrainResult r;
  {
    pipeline::SD3Generator base(files, f32);
    {  // the base's per-encoder dropout (the trainer's drop_rate): rate 1 zeroes every encoder, 0 none
      const auto f = base.encode_text({"a red checkerboard", "a blue checkerboard"});
      auto ctx = f.context, pooled = f.pooled;
      auto gen = at::detail::createCPUGenerator(1);
      base.apply_dropout(ctx, pooled, 1.0, gen);
      CHECK(ctx.abs().max().item<double>() == 0);
      CHECK(pooled.abs().max().item<double>() == 0);
      CHECK(f.context.abs().max().item<double>() > 0);  // the inputs are left as they were
      ctx = f.context, pooled = f.pooled;
      base.apply_dropout(ctx, pooled, 0.0, gen);
      CHECK(torch::equal(ctx, f.context));
      CHECK(torch::equal(pooled, f.pooled));
    }
    const data::ImageFolder folder(data);
    training::LoraTrainer<pipeline::SD3Inference::objective_type, pipeline::SD3Generator> trainer(base, folder, out, c, false, cb);
    CHECK(trainer.examples() == 8);
    CHECK(trainer.config().alpha == 4);            // alpha 0: the rank
    CHECK(trainer.config().timestep_shift == 3);  // the family default of an SD3 checkpoint
    const auto buckets = trainer.bucket_counts();
    REQUIRE(buckets.size() == 2);
    CHECK(buckets[0].first == data::Bucket{64, 64});
    CHECK(buckets[1].first == data::Bucket{96, 48});
    CHECK(buckets[0].second == 4);
    CHECK(buckets[1].second == 4);
    REQUIRE(trainer.skipped().size() == 1);
    CHECK_THAT(trainer.skipped()[0].file, Contains("uncaptioned.png"));
    r = trainer.run();
  }
  INFO("fit loss " << r.fit_loss_before << " -> " << r.fit_loss_after);
  CHECK(r.steps == 60);
  CHECK(r.fit_loss_after < 0.97 * r.fit_loss_before);  // deterministic (fixed t and noise); seen 1.32 -> 1.24
  REQUIRE(std::filesystem::is_regular_file(out / "lora.safetensors"));
  REQUIRE(std::filesystem::is_regular_file(out / "lora_kohya.safetensors"));
  CHECK(std::filesystem::is_regular_file(out / "loss.png"));
  {
    io::SafetensorsFile f((out / "lora.safetensors").string());
    CHECK(f.metadata().at("format") == "pt");
    CHECK(f.contains("transformer.transformer_blocks.0.attn.to_q.lora_A.weight"));
    io::SafetensorsFile k((out / "lora_kohya.safetensors").string());
    CHECK(k.contains("lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight"));
  }

  // The LoRA in the generator: it changes the image; strength 0 is the base image; both layouts agree.
  const auto base_img = pipeline::SD3Generator(files, f32).generate(request());
  auto with = [&](const std::string& file, double strength) {
    auto o = f32;
    o.loras.push_back({(out / file).string(), strength});
    return pipeline::SD3Generator(files, o).generate(request());
  };
  CHECK(torch::equal(with("lora.safetensors", 0.0), base_img));
  const auto tuned = with("lora.safetensors", 1.0);
  CHECK((tuned - base_img).abs().max().item<double>() > 1e-3);
  CHECK((with("lora_kohya.safetensors", 1.0) - tuned).abs().max().item<double>() < 1e-4);

  // Through the command line: a short run, resumed to a longer budget; bad input exits 2.
  const auto cli_out = (work / "cli").string();
  const std::string base_args = "train --init " + m.all() + " --tokenizers " + m.tok() + " --data " + data.string() +
                                " --dtype f32 --resolution 64 --lora-rank 2 --lora-targets attention,mlp.fc1 --out " + cli_out;
  auto res = test::run_cli(base_args + " --steps 3 --checkpoint-every 2");
  INFO(res.err);
  REQUIRE(res.exit_code == 0);
  CHECK_THAT(res.err, Contains("skipped: "));
  CHECK_THAT(res.err, Contains("uncaptioned.png"));
  CHECK_THAT(res.out, Contains("LoRA trained 3 steps"));
  res = test::run_cli(base_args + " --steps 5 --resume");
  INFO(res.err);
  REQUIRE(res.exit_code == 0);
  CHECK_THAT(res.err, Contains("resumed at step 3"));
  CHECK_THAT(res.out, Contains("LoRA trained 5 steps"));
  {
    io::SafetensorsFile k((std::filesystem::path(cli_out) / "lora_kohya.safetensors").string());
    CHECK(k.contains("lora_unet_joint_blocks_1_x_block_mlp_fc1.lora_up.weight"));
  }
  res = test::run_cli(base_args + " --steps 6 --resume --lr 0.5");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("--lr differs"));
  res = test::run_cli(base_args + " --steps 3");  // the folder holds a run
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("already holds a LoRA training run"));
  res = test::run_cli("train --data " + data.string() + " --lora-rank 4 --out " + (work / "x").string());
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("need --init MODEL"));
  std::filesystem::create_directories(work / "empty");
  res = test::run_cli("train --init " + m.all() + " --tokenizers " + m.tok() + " --data " + (work / "empty").string() +
                      " --resolution 64 --out " + (work / "y").string() + " --steps 2");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("no usable images"));
  res = test::run_cli("train --init " + m.all() + " --tokenizers " + m.tok() + " --data " + data.string() +
                      " --objective \"rf/mode(1.29)\" --resolution 64 --out " + (work / "z").string() + " --steps 2");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("this pipeline samples t from logit_normal"));
}

TEST_CASE("objective specs read into the compile-time objective: numbers set, other types refused", "[training][finetune]") {
  const auto o = training::objective_from_spec<pipeline::SD3Objective>("rf/lognorm(0.5, 0.6)");
  CHECK(o.timesteps.m == 0.5);
  CHECK(o.timesteps.s == 0.6);
  CHECK(training::objective_from_spec<pipeline::SD3Objective>("rf/logit_normal(0,1)").timesteps.s == 1.0);
  CHECK_THROWS_WITH(training::objective_from_spec<pipeline::SD3Objective>("eps/lognorm(0, 1)"), Contains("process is rf"));
  CHECK_THROWS_WITH(training::objective_from_spec<pipeline::SD3Objective>("rf"), Contains("samples t from logit_normal"));
  CHECK_THROWS_AS(training::objective_from_spec<pipeline::SD3Objective>("rf/lognorm(0)"), InputError);
}

}  // namespace t_finetune
