// Diffusion-DPO: the loss against a float64 hand computation, its value at the start (log 2,
// margin 0, accuracy 0.5), the pairs file's errors by line, and a toy run on a tiny SD3 checkpoint
// written by the test (one prompt, a chosen and a rejected image): a few steps raise the margin
// while the reference (adapters at strength 0) stays the base model exactly.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include <torch/torch.h>

#include "diffuse/data/preference_pairs.hpp"
#include "diffuse/pipeline/sd3_generator.hpp"
#include "diffuse/training/dpo_trainer.hpp"
#include "pipeline/checker_folder.hpp"
#include "pipeline/tiny_sd3.hpp"
#include "test_util.hpp"

namespace t_dpo {

using namespace diffuse;
using Catch::Matchers::Contains;

TEST_CASE("the DPO loss equals its float64 hand computation; log 2, margin 0, accuracy 0.5 at the start",
          "[training][dpo]") {
  const std::vector<double> ew{0.31, 0.52, 0.40}, el{0.29, 0.61, 0.40}, rw{0.30, 0.50, 0.41}, rl{0.30, 0.60, 0.39};
  const double beta = 80;
  auto f = [](const std::vector<double>& v) { return torch::tensor(v, torch::kFloat64); };
  const auto d = training::dpo_loss(f(ew), f(el), f(rw), f(rl), beta);
  double loss = 0, acc = 0, margin = 0;
  for (std::size_t i = 0; i < ew.size(); ++i) {
    const double m = -0.5 * beta * ((ew[i] - rw[i]) - (el[i] - rl[i]));
    loss += std::log1p(std::exp(-m));  // -log sigmoid(m)
    acc += m > 0 ? 1 : m == 0 ? 0.5 : 0;
    margin += m;
  }
  CHECK(d.loss.item<double>() == Approx(loss / 3).epsilon(1e-12));
  CHECK(d.accuracy == Approx(acc / 3));
  CHECK(d.margin == Approx(margin / 3).epsilon(1e-12));
  CHECK(d.chosen_error == Approx((0.31 + 0.52 + 0.40) / 3));
  CHECK(d.rejected_ref_error == Approx((0.30 + 0.60 + 0.39) / 3));

  // Model = reference: log 2, no margin, ties counted half.
  const auto same = training::dpo_loss(f(ew), f(el), f(ew), f(el), 5000);
  CHECK(same.loss.item<double>() == Approx(std::log(2.0)).epsilon(1e-12));
  CHECK(same.margin == 0);
  CHECK(same.accuracy == 0.5);

  // Lowering the chosen error lowers the loss; lowering the rejected error raises it.
  auto w = f(ew).requires_grad_(), l = f(el).requires_grad_();
  training::dpo_loss(w, l, f(rw), f(rl), beta).loss.backward();
  CHECK((w.grad() > 0).all().item<bool>());
  CHECK((l.grad() < 0).all().item<bool>());
  CHECK_THROWS_WITH(training::dpo_loss(f(ew), f(el), f(rw), f(rl), 0), Contains("beta must be positive"));
  CHECK_THROWS_WITH(training::dpo_loss(f(ew), f({0.1}), f(rw), f(rl), 1), Contains("one length"));
}

TEST_CASE("a pairs file with a bad line, a missing image or no pairs is refused by line", "[training][dpo][data]") {
  test::TempDir d;
  test::write_checker_folder(d / "img");
  auto write = [&](const std::string& text) {
    std::ofstream(d / "pairs.jsonl") << text;
    return d / "pairs.jsonl";
  };
  const auto ok = data::read_preference_pairs(
      write("{\"prompt\": \"a red checkerboard\", \"chosen\": \"img/img0.png\", \"rejected\": \"img/img2.png\"}\n\n"
            "{\"prompt\": \"a blue checkerboard\", \"chosen\": \"img/img2.png\", \"rejected\": \"img/img0.png\"}\n"));
  REQUIRE(ok.size() == 2);
  CHECK(ok[1].prompt == "a blue checkerboard");
  CHECK(ok[0].chosen == (d / "img/img0.png").lexically_normal());
  CHECK_THROWS_WITH(data::read_preference_pairs(write(
                        "{\"prompt\": \"a\", \"chosen\": \"img/img0.png\", \"rejected\": \"img/img2.png\"}\n{\"prompt\": \"a\",")),
                    Contains("pairs.jsonl:2") && Contains("not a JSON object"));
  CHECK_THROWS_WITH(data::read_preference_pairs(write("{\"prompt\": \"a\", \"chosen\": \"img/none.png\", \"rejected\": \"img/img2.png\"}\n")),
                    Contains("pairs.jsonl:1") && Contains("image not found") && Contains("none.png"));
  CHECK_THROWS_WITH(data::read_preference_pairs(write("{\"prompt\": \"a\", \"chosen\": \"img/img0.png\"}\n")),
                    Contains("pairs.jsonl:1") && Contains("\"rejected\""));
  CHECK_THROWS_WITH(data::read_preference_pairs(write("\n")), Contains("no pairs"));
  CHECK_THROWS_WITH(data::read_preference_pairs(d / "absent.jsonl"), Contains("cannot open"));
}

TEST_CASE("DPO on a toy problem: the margin rises, the reference stays the base model", "[training][dpo]") {
  test::TinySD3 m;
  test::TempDir work;
  test::write_checker_folder(work / "img");
  pipeline::SD3ModelFiles tok;
  tok.tokenizers = m.tok();
  pipeline::SD3GeneratorOptions f32;
  f32.dtype = torch::kFloat32;
  pipeline::SD3Generator base(pipeline::find_sd3_model(m.all(), tok), f32);
  // One prompt; the chosen image is the red checkerboard, the rejected one the blue.
  const std::vector<data::PreferencePair> pairs{{"a red checkerboard", work / "img/img0.png", work / "img/img2.png"}};

  auto c = training::DpoTrainConfig::defaults();
  c.rank = 4, c.beta = 200, c.lr = 5e-3, c.batch = 4, c.steps = 25, c.resolution = 64, c.checkpoint_every = 0, c.log_every = 5;
  c.precision = "f32";
  training::DpoTrainer<pipeline::SD3Objective, pipeline::SD3Generator> dpo(base, pairs, work / "run", c, false);
  // Fixed evaluation: the pair four times at t = 0.2, 0.4, 0.6, 0.8 with fixed noise.
  const auto idx = torch::zeros({4}, torch::kLong);
  const auto t = torch::tensor({0.2f, 0.4f, 0.6f, 0.8f});
  torch::manual_seed(9);
  const auto noise = torch::randn({4, 16, 8, 8});
  const auto before = dpo.terms(idx, t, noise, false);
  CHECK(before.loss.item<double>() == Approx(std::log(2.0)).epsilon(1e-6));  // adapters start at zero (float32)
  CHECK(before.margin == 0);
  CHECK(before.accuracy == 0.5);
  const auto r = dpo.run();
  CHECK(r.steps == 25);
  const auto after = dpo.terms(idx, t, noise, false);
  INFO("margin " << before.margin << " -> " << after.margin << ", loss " << before.loss.item<double>() << " -> "
                 << after.loss.item<double>());
  CHECK(after.margin > 0.1);
  CHECK(after.accuracy == 1.0);
  CHECK(after.loss.item<double>() < 0.9 * std::log(2.0));
  // The chosen error fell relative to the rejected one, against the reference.
  CHECK((after.chosen_error - after.chosen_ref_error) < (after.rejected_error - after.rejected_ref_error));
  // The reference is the base model: its errors did not move.
  CHECK(after.chosen_ref_error == before.chosen_ref_error);
  CHECK(after.rejected_ref_error == before.rejected_ref_error);
  CHECK(std::filesystem::is_regular_file(work / "run/lora.safetensors"));
  CHECK(std::filesystem::is_regular_file(work / "run/lora_kohya.safetensors"));
  CHECK(test::read_text(work / "run/metrics.jsonl").find("\"accuracy\"") != std::string::npos);

  // Resumed to a longer budget: continues at step 25.
  auto longer = c;
  longer.steps = 30;
  pipeline::SD3Generator base2(pipeline::find_sd3_model(m.all(), tok), f32);
  training::DpoTrainer<pipeline::SD3Objective, pipeline::SD3Generator> resumed(base2, pairs, work / "run", longer, true);
  CHECK(resumed.step() == 25);
  CHECK(resumed.run().steps == 30);
  CHECK_THROWS_WITH((training::DpoTrainer<pipeline::SD3Objective, pipeline::SD3Generator>(base2, pairs, work / "run", c, false)),
                    Contains("already holds a DPO run"));
}

TEST_CASE("diffuse dpo trains, resumes and refuses bad input with exit code 2", "[training][dpo][cli]") {
  test::TinySD3 m;
  test::TempDir work;
  test::write_checker_folder(work / "img");
  std::ofstream(work / "pairs.jsonl") << "{\"prompt\": \"a red checkerboard\", \"chosen\": \"img/img0.png\", \"rejected\": \"img/img2.png\"}\n";
  std::ofstream(work / "bad.jsonl") << "{\"prompt\": \"a red checkerboard\", \"chosen\": \"img/img0.png\", \"rejected\": \"img/img2.png\"}\n"
                                    << "{\"prompt\": \"x\", \"chosen\": \"img/gone.png\", \"rejected\": \"img/img2.png\"}\n";
  const auto out = (work / "dpo").string();
  const std::string base = "dpo --init " + m.all() + " --tokenizers " + m.tok() + " --dtype f32 --resolution 64 --lora-rank 2 --out " + out;
  auto res = test::run_cli(base + " --pairs " + (work / "pairs.jsonl").string() + " --steps 3 --beta 100");
  INFO(res.err);
  REQUIRE(res.exit_code == 0);
  CHECK_THAT(res.out, Contains("DPO trained 3 steps"));
  CHECK(std::filesystem::is_regular_file(work / "dpo/lora_kohya.safetensors"));
  res = test::run_cli(base + " --pairs " + (work / "pairs.jsonl").string() + " --steps 4 --resume");
  INFO(res.err);
  CHECK(res.exit_code == 0);
  CHECK_THAT(res.err, Contains("resumed at step 3"));
  res = test::run_cli(base + " --pairs " + (work / "pairs.jsonl").string() + " --steps 5 --resume --beta 7");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("--beta differs"));
  res = test::run_cli(base + "2 --pairs " + (work / "bad.jsonl").string() + " --steps 2");
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("bad.jsonl:2") && Contains("gone.png"));
  res = test::run_cli("sample --checkpoint " + out + " --prompt x --out " + (work / "s.png").string());
  CHECK(res.exit_code == 2);
  CHECK_THAT(res.err, Contains("not a `diffuse train` folder") && Contains("diffuse generate --model"));
}

}  // namespace t_dpo
