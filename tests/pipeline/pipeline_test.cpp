// The training pipeline: caption tokenizer and encoder, feature cache, trainer (resume, NaN guard,
// dropout), sampling through the pipeline typedefs (rectified flow, another process, a KL
// autoencoder), and the train / sample / eval commands.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "diffuse/data/shapes_dataset.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/pipeline/trained_model.hpp"
#include "diffuse/process/ldm_linear.hpp"
#include "diffuse/timesteps/uniform.hpp"
#include "diffuse/training/trainer.hpp"
#include "test_util.hpp"
#include "tiny_training.hpp"

namespace t_pipeline {

using namespace diffuse;
using diffuse::test::TempDir;

using test::losses;
using test::start_cli;
using test::tiny_config;

// Trains into `dir` and dies after step `step` as a killed process would (no final checkpoint).
void run_killed_after(const std::filesystem::path& dir, const training::TrainConfig& c, int step) {
  training::TrainCallbacks cb;
  cb.keep_going = [step](int s) -> bool {
    if (s == step) throw std::runtime_error("killed");
    return true;
  };
  training::Trainer<pipeline::SD3PixelRecipe> t(dir, c, false, cb);
  CHECK_THROWS_WITH(t.run(), "killed");
}

std::vector<std::string> shapes_captions(int n) {
  std::vector<std::string> out;
  const data::ShapesWorld w(16, 0);
  for (int i = 0; i < n; ++i) out.push_back(w.example(static_cast<std::uint64_t>(i)).caption);
  return out;
}

TEST_CASE("the caption tokenizer is trained on the captions and round-trips them", "[pipeline]") {
  TempDir d;
  const auto caps = shapes_captions(600);
  encoders::CaptionTokenizer::train(caps, d / "tok.model");
  const encoders::CaptionTokenizer tok(d / "tok.model", 12);
  CHECK(tok.vocab_size() <= 128);
  for (const auto& c : caps) {
    bool cut = true;
    const auto ids = tok.ids(c, &cut);
    REQUIRE(ids.size() == 12);
    CHECK_FALSE(cut);
    CHECK(tok.decode(ids) == c);
    const auto eos = std::find(ids.begin(), ids.end(), encoders::CaptionTokenizer::eos_id);
    REQUIRE(eos != ids.end());
    CHECK(std::all_of(eos + 1, ids.end(), [](int i) { return i == encoders::CaptionTokenizer::pad_id; }));
    CHECK(std::none_of(ids.begin(), eos, [](int i) { return i == encoders::CaptionTokenizer::unk_id; }));
  }
  // Training again on the same captions gives the same tokenizer.
  encoders::CaptionTokenizer::train(caps, d / "tok2.model");
  const encoders::CaptionTokenizer tok2(d / "tok2.model", 12);
  for (const auto& c : caps) CHECK(tok2.ids(c) == tok.ids(c));
  // ... and the same file, byte for byte, in another folder (issue 29: the feature-cache key
  // hashes it; the model must not record where it was trained).
  std::filesystem::create_directories(d / "another run" / "deeper");
  encoders::CaptionTokenizer::train(caps, d / "another run" / "deeper" / "tok.model");
  const auto first = test::read_text(d / "tok.model");
  CHECK(first.size() > 100);
  CHECK(test::read_text(d / "another run" / "deeper" / "tok.model") == first);
  CHECK(test::read_text(d / "tok2.model") == first);
  CHECK(first.find(d.path().string()) == std::string::npos);
  CHECK(tok.ids("a red circle")[3] == encoders::CaptionTokenizer::eos_id);  // every word one piece
  bool cut = false;
  const auto ids = tok.ids("a red circle above a blue square and a green triangle left of a yellow circle", &cut);
  CHECK(cut);
  CHECK(ids.back() == encoders::CaptionTokenizer::eos_id);
}

TEST_CASE("the caption encoder is frozen, seeded, and pools over the real tokens only", "[pipeline]") {
  TempDir d;
  auto c = encoders::CaptionConditioning::create(d.path(), shapes_captions(300), {0, 16, 1, 2, 12, 5});
  const auto f = c.encode({"a red circle", "two blue squares"});
  CHECK(f.context.sizes() == torch::IntArrayRef{2, 12, 16});
  CHECK(f.pooled.sizes() == torch::IntArrayRef{2, 16});
  CHECK_FALSE(f.context.requires_grad());
  // The pooled vector is the mean of the states at non-pad positions.
  const auto ids = c.tokenizer().encode({"a red circle"});
  const auto real = (ids[0] != 0).nonzero().squeeze(1);
  CHECK(torch::allclose(f.pooled[0], f.context[0].index_select(0, real).mean(0), 1e-5, 1e-6));
  CHECK_FALSE(torch::allclose(f.pooled[0], f.context[0].mean(0), 1e-3, 1e-4));
  // Loading the folder gives the same features; another seed gives other weights and another fingerprint.
  const auto again = encoders::CaptionConditioning::load(d.path());
  CHECK(torch::equal(again.encode({"a red circle"}).context, f.context.narrow(0, 0, 1)));
  CHECK(again.fingerprint() == c.fingerprint());
  TempDir d2;
  auto other = encoders::CaptionConditioning::create(d2.path(), shapes_captions(300), {0, 16, 1, 2, 12, 6});
  CHECK(other.fingerprint() != c.fingerprint());
  CHECK_FALSE(torch::allclose(other.encode({"a red circle"}).context, f.context.narrow(0, 0, 1)));
}

TEST_CASE("the feature cache is built once, reused, and keyed by the encoders' weights", "[pipeline]") {
  TempDir d;
  auto cond = encoders::CaptionConditioning::create(d / "enc", shapes_captions(300), {0, 16, 1, 2, 12, 5});
  const autoencoder::PixelSpace px;
  const training::ShapesDataSpec spec{16, 0, 0, 40};
  const auto a = training::open_feature_cache(d / "cache", spec, cond, px);
  CHECK(a.latents.sizes() == torch::IntArrayRef{40, 3, 16, 16});
  CHECK(a.context.sizes() == torch::IntArrayRef{40, 12, 16});
  // The cached rows are the encodings of the examples: the pixels exactly; the context up to the
  // float32 rounding of a product over 40 rows against one (the GEMM may block them differently:
  // 2e-5 of scale, the bound used for MM-DiT forwards).
  const auto [caps, imgs] = training::render_examples({16, 0, 5, 1});
  CHECK(torch::equal(a.latents[5], imgs[0]));
  const auto one = cond.encode(caps).context[0];
  const double err = (a.context[5] - one).abs().max().item<double>();
  INFO("max |cached - encoded alone| = " << err);
  CHECK(err <= 2e-5 * std::max(1.0, one.abs().max().item<double>()));
  const auto mtime = std::filesystem::last_write_time(a.path);
  const auto b = training::open_feature_cache(d / "cache", spec, cond, px);
  CHECK(b.path == a.path);
  CHECK(std::filesystem::last_write_time(b.path) == mtime);
  // Other encoder weights (another seed): another key, another file; the old one is never read.
  auto cond2 = encoders::CaptionConditioning::create(d / "enc2", shapes_captions(300), {0, 16, 1, 2, 12, 6});
  const auto c = training::open_feature_cache(d / "cache", spec, cond2, px);
  CHECK(c.key != a.key);
  CHECK(c.path != a.path);
  // Other data: another key.
  CHECK(training::feature_cache_key(training::ShapesDataSpec{16, 1, 0, 40}, cond, px) != a.key);
  // A file whose metadata disagrees with its name is refused, not used.
  io::save_safetensors(a.path, {{"latents", a.latents.clone()}, {"context", a.context.clone()}, {"pooled", a.pooled.clone()}},
                       {{"diffuse.cache_key", "0000000000000000"}});
  CHECK_THROWS_WITH(training::open_feature_cache(d / "cache", spec, cond, px), Catch::Contains("key does not match"));
}

TEST_CASE("conditioning dropout drops context and pooled independently at the given rate", "[pipeline]") {
  auto gen = at::detail::createCPUGenerator(11);
  const auto [kc, kp] = training::conditioning_keep_masks(200000, 0.464, gen);
  const double dc = 1 - kc.mean().item<double>(), dp = 1 - kp.mean().item<double>();
  const double both = ((1 - kc) * (1 - kp)).mean().item<double>();
  CHECK(dc == Approx(0.464).margin(0.005));  // 0.005 is > 4 standard errors at n = 200000
  CHECK(dp == Approx(0.464).margin(0.005));
  CHECK(both == Approx(0.464 * 0.464).margin(0.005));  // independent
}

TEST_CASE("training lowers the shapes model's loss: validation loss and the logged training loss fall", "[pipeline][training]") {
  TempDir d;
  auto c = tiny_config();
  c.steps = 150;
  c.lr = 2e-3;
  c.warmup_steps = 10;
  training::Trainer<pipeline::SD3PixelRecipe> t(d / "run", c, false);
  const auto [before, before_ema] = t.validation_loss();
  const auto r = t.run();
  const auto l = losses(d / "run" / "metrics.jsonl");
  REQUIRE(l.size() == 150);
  double first = 0, last = 0;
  for (int i = 0; i < 20; ++i) first += l[static_cast<std::size_t>(i)] / 20, last += l[l.size() - 1 - static_cast<std::size_t>(i)] / 20;
  INFO("validation loss " << before << " -> " << r.val_loss << "; training loss (mean of 20 steps) " << first << " -> " << last);
  CHECK(r.val_loss < 0.75 * before);  // 0.58x here
  CHECK(last < 0.8 * first);  // 0.69x here
  CHECK(before_ema == Approx(before));  // the EMA starts as a copy of the model
}

TEST_CASE("a resumed run repeats the uninterrupted run's losses exactly", "[pipeline][training]") {
  TempDir d;
  auto c = tiny_config();
  {
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "straight", c, false);
    t.run();
  }
  const auto straight = losses(d / "straight" / "metrics.jsonl");
  REQUIRE(straight.size() == 6);
  CHECK(std::isfinite(straight.back()));
  // Killed after step 5 with the last checkpoint at step 3: steps 4 and 5 are run again.
  c.checkpoint_every = 3;
  run_killed_after(d / "killed", c, 5);
  CHECK(losses(d / "killed" / "metrics.jsonl").size() == 5);
  CHECK(std::filesystem::exists(d / "killed" / "samples.png"));  // sheets are written at checkpoints, during training
  CHECK(std::filesystem::exists(d / "killed" / "loss.png"));
  {
    CHECK_THROWS_WITH(training::Trainer<pipeline::SD3PixelRecipe>(d / "killed", c, false), Catch::Contains("--resume"));
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "killed", c, true);
    CHECK(t.step() == 3);
    t.run();
  }
  const auto resumed = losses(d / "killed" / "metrics.jsonl");
  REQUIRE(resumed.size() == straight.size());
  for (std::size_t i = 0; i < straight.size(); ++i) CHECK(resumed[i] == straight[i]);
  CHECK(test::read_text(d / "killed" / "ckpt-0000006" / "ema.safetensors") ==
        test::read_text(d / "straight" / "ckpt-0000006" / "ema.safetensors"));
  CHECK(std::filesystem::exists(d / "killed" / "loss.png"));
  CHECK(std::filesystem::exists(d / "killed" / "samples.png"));
  CHECK_FALSE(std::filesystem::exists(d / "killed" / "ckpt-0000003"));  // superseded checkpoints are removed
}

TEST_CASE("a batch split over worker threads trains the same model as one thread, and resumes exactly", "[pipeline][training]") {
  TempDir d;
  auto c = tiny_config();
  c.steps = 4;
  std::vector<std::vector<double>> runs;
  std::vector<torch::Tensor> weights;
  for (int workers : {1, 2, 3}) {
    c.workers = workers;
    std::vector<std::string> lines;
    training::TrainCallbacks cb;
    cb.log = [&](const std::string& l) { lines.push_back(l); };
    training::Trainer<pipeline::SD3PixelRecipe> t(d / ("w" + std::to_string(workers)), c, false, cb);
    t.run();
    const bool split = std::any_of(lines.begin(), lines.end(), [](const std::string& l) { return l.find("worker threads") != std::string::npos; });
    CHECK(split == (workers > 1));
    runs.push_back(losses(d / ("w" + std::to_string(workers)) / "metrics.jsonl"));
    torch::NoGradGuard g;
    std::vector<torch::Tensor> flat;
    for (const auto& p : t.model()->parameters()) flat.push_back(p.reshape({-1}));
    weights.push_back(torch::cat(flat));
  }
  // The shards' gradients add up to the whole batch's: the same losses and weights up to the
  // order of float32 sums (3 shards of 8: 3, 3 and 2 examples).
  for (std::size_t r = 1; r < runs.size(); ++r) {
    REQUIRE(runs[r].size() == runs[0].size());
    for (std::size_t i = 0; i < runs[0].size(); ++i) CHECK(runs[r][i] == Approx(runs[0][i]).epsilon(1e-4));
    CHECK((weights[r] - weights[0]).abs().max().item<double>() < 1e-4);
  }
  CHECK((weights[0] - weights[1]).abs().max().item<double>() > 0);  // a different sum order: not the same path
  // Split runs are reproducible and resumable: killed after step 3 (checkpoint at 2), resumed.
  c.workers = 2;
  c.checkpoint_every = 2;
  run_killed_after(d / "killed", c, 3);
  {
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "killed", c, true);
    CHECK(t.step() == 2);
    t.run();
  }
  const auto resumed = losses(d / "killed" / "metrics.jsonl");
  REQUIRE(resumed.size() == runs[1].size());
  for (std::size_t i = 0; i < resumed.size(); ++i) CHECK(resumed[i] == runs[1][i]);
  c.workers = -1;
  CHECK_THROWS_WITH(training::Trainer<pipeline::SD3PixelRecipe>(d / "bad", c, false), Catch::Contains("workers"));
}

TEST_CASE("the config's objective string sets the typedef's objective numbers; another type is refused", "[pipeline][training]") {
  TempDir d;
  auto c = tiny_config();
  c.steps = 3;
  std::vector<double> base, shifted;
  {
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "a", c, false);
    t.run();
    base = losses(d / "a" / "metrics.jsonl");
  }
  c.objective = "rf/lognorm(2.5, 0.3)";  // t near 0.92: mostly noise, another loss per step
  {
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "b", c, false);
    t.run();
    shifted = losses(d / "b" / "metrics.jsonl");
  }
  REQUIRE(base.size() == shifted.size());
  CHECK(base != shifted);
  // The model folder records it and loads with it.
  CHECK(load_config<training::TrainConfig>(d / "b" / "config.json", training::TrainConfig::shapes_default()).objective ==
        "rf/lognorm(2.5, 0.3)");
  c.objective = "rf/mode(1.29)";
  CHECK_THROWS_WITH(training::Trainer<pipeline::SD3PixelRecipe>(d / "c", c, false), Catch::Contains("samples t from logit_normal"));
}

TEST_CASE("category weights set the training mix; AdamW's betas come from the config", "[pipeline][training]") {
  using training::shapes_example_weights;
  CHECK_FALSE(shapes_example_weights({}, 0, 12).defined());
  CHECK_THROWS_AS(shapes_example_weights({1, 2}, 0, 12), InputError);
  // Example i shows category i mod 6; its weight is that category's.
  const auto w = shapes_example_weights({1, 0, 3, 0, 0, 2}, 6, 12);
  REQUIRE(w.numel() == 12);
  for (int i = 0; i < 12; ++i) {
    const double expect[6] = {1, 0, 3, 0, 0, 2};
    CHECK(w[i].item<double>() == expect[(6 + i) % 6]);
  }
  // Drawn as the trainer draws: shares 1/6, 3/6, 2/6, none from a zero weight.
  auto gen = at::detail::createCPUGenerator(11);
  const auto idx = torch::multinomial(shapes_example_weights({1, 0, 3, 0, 0, 2}, 0, 600), 6000, true, gen);
  const auto cat = idx.remainder(6);
  const double n = 6000;
  CHECK((cat == 1).sum().item<double>() + (cat == 3).sum().item<double>() + (cat == 4).sum().item<double>() == 0);
  CHECK((cat == 0).sum().item<double>() / n == Approx(1.0 / 6).margin(0.02));  // ~4.6 sigma
  CHECK((cat == 2).sum().item<double>() / n == Approx(3.0 / 6).margin(0.03));
  CHECK((cat == 5).sum().item<double>() / n == Approx(2.0 / 6).margin(0.03));
  // In the trainer: a mix trains; bad mixes and betas are refused by name.
  TempDir d;
  auto c = tiny_config();
  c.steps = 3;
  c.category_weights = {0, 1, 1, 0, 1, 1};
  std::vector<double> beta2_default, beta2_half;
  {
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "mix", c, false);
    t.run();
    beta2_default = losses(d / "mix" / "metrics.jsonl");
  }
  c.adam_beta2 = 0.5;  // the second moment forgets fast: steps 2 and 3 move differently
  {
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "beta", c, false);
    t.run();
    beta2_half = losses(d / "beta" / "metrics.jsonl");
  }
  REQUIRE(beta2_default.size() == 3);
  REQUIRE(beta2_half.size() == 3);
  CHECK(beta2_half[0] == beta2_default[0]);  // the same first batch and weights
  CHECK(beta2_half[2] != beta2_default[2]);
  auto bad = tiny_config();
  bad.category_weights = {1, 1, 1};
  CHECK_THROWS_WITH(training::Trainer<pipeline::SD3PixelRecipe>(d / "bad1", bad, false), Catch::Contains("6 weights"));
  bad.category_weights = {0, 0, 0, 0, 0, 0};
  CHECK_THROWS_WITH(training::Trainer<pipeline::SD3PixelRecipe>(d / "bad2", bad, false), Catch::Contains("not all be 0"));
  bad.category_weights = {1, -1, 1, 1, 1, 1};
  CHECK_THROWS_WITH(training::Trainer<pipeline::SD3PixelRecipe>(d / "bad3", bad, false), Catch::Contains(">= 0"));
  bad = tiny_config();
  bad.adam_beta2 = 1.0;
  CHECK_THROWS_WITH(training::Trainer<pipeline::SD3PixelRecipe>(d / "bad4", bad, false), Catch::Contains("adam_beta2"));
}

TEST_CASE("precision auto is decided by the CPU's features, logged, and recorded in the run's config", "[pipeline][training]") {
  using training::Bf16Features;
  using training::precision_for;
  // The rule (precision_choice.hpp): bf16 where the bf16 products are known to be faster.
  CHECK(precision_for(Bf16Features{true, true, false}).precision == "bf16");   // AMX (Sapphire Rapids on)
  CHECK(precision_for(Bf16Features{false, true, true}).precision == "bf16");   // AMD Zen 4 / 5
  CHECK(precision_for(Bf16Features{false, true, false}).precision == "f32");   // Intel without AMX
  CHECK(precision_for(Bf16Features{false, false, true}).precision == "f32");   // no bf16 instructions
  CHECK(precision_for(Bf16Features{}).precision == "f32");
  CHECK_THAT(precision_for(Bf16Features{false, true, false}).reason, Catch::Contains("without AMX"));
  // No timing: the same answer every time on one machine (a timing probe flipped: issue 29).
  const auto here = training::choose_precision();
  for (int i = 0; i < 5; ++i) CHECK(training::choose_precision().precision == here.precision);
  if (cpu_kernels_generic()) CHECK(here.precision == "f32");  // DIFFUSE_CPU_KERNELS=generic: no bf16 instructions
  // In the trainer: one log line names the choice and why; config.json records the choice (and the
  // worker count used), and a resume takes both from there.
  TempDir d;
  auto c = tiny_config();
  c.precision = "auto";
  c.workers = 0;
  c.steps = 2;
  c.checkpoint_every = 1;
  std::vector<std::string> lines;
  training::TrainCallbacks cb;
  cb.log = [&](const std::string& l) { lines.push_back(l); };
  {
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "run", c, false, cb);
    t.run();
  }
  const auto line = std::find_if(lines.begin(), lines.end(), [](const std::string& l) { return l.find("precision auto -> ") != std::string::npos; });
  REQUIRE(line != lines.end());
  CHECK_THAT(*line, Catch::Contains("-> " + here.precision + " (" + here.reason));
  CHECK(losses(d / "run" / "metrics.jsonl").size() == 2);
  const auto saved = load_config<training::TrainConfig>(d / "run" / "config.json", training::TrainConfig::shapes_default());
  CHECK(saved.precision == here.precision);
  CHECK(saved.workers == std::min(usable_hardware_threads(), c.batch));
  lines.clear();
  c.steps = 3;
  {
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "run", c, true, cb);
    CHECK(t.config().precision == here.precision);
    t.run();
  }
  CHECK(std::any_of(lines.begin(), lines.end(),
                    [&](const std::string& l) { return l == "precision " + here.precision + " (the run's config.json)"; }));
  CHECK(losses(d / "run" / "metrics.jsonl").size() == 3);
  c.precision = "f16";
  CHECK_THROWS_WITH(training::Trainer<pipeline::SD3PixelRecipe>(d / "bad", c, false), Catch::Contains("f32, bf16 or auto"));
}

TEST_CASE("a non-finite loss stops training with a report and leaves the checkpoint intact", "[pipeline][training]") {
  TempDir d;
  auto c = tiny_config();
  c.lr = 1e30;
  c.warmup_steps = 0;
  c.grad_clip = 0;
  c.checkpoint_every = 1;
  c.steps = 50;
  training::Trainer<pipeline::SD3PixelRecipe> t(d / "run", c, false);
  std::string message;
  try {
    t.run();
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK_THAT(message, Catch::Contains("non-finite") && Catch::Contains("first non-finite gradient") &&
                          Catch::Contains("--resume"));
  const auto st = nlohmann::json::parse(test::read_text(d / "run" / "state.json"));
  const int saved = st["step"].get<int>();
  CHECK(saved >= 1);
  CHECK(saved < 50);
  // The saved weights are the last finite ones.
  io::SafetensorsFile f((d / "run" / st["checkpoint"].get<std::string>() / "model.safetensors").string());
  for (const auto& info : f.tensors()) CHECK(torch::isfinite(io::load_tensor(f, info)).all().item<bool>());
  CHECK_THAT(test::read_text(d / "run" / "metrics.jsonl"), Catch::Contains("\"event\":\"non-finite\""));
}

TEST_CASE("a trained model loads for generation and samples reproducibly", "[pipeline][training]") {
  TempDir d;
  {
    training::Trainer<pipeline::SD3PixelRecipe> t(d / "m", tiny_config(), false);
    t.run();
  }
  pipeline::TrainedModel<pipeline::SD3PixelRecipe> m(d / "m");
  CHECK(m.step() == 6);
  pipeline::GenerateOptions o;
  o.steps = 3;
  o.seed = 4;
  o.height = o.width = 0;
  int calls = 0;
  o.on_step = [&](const sampling::StepInfo&) { return ++calls < 2; };  // stops after two steps
  const auto a = m.generate({"a red circle", "two blue squares"}, o);
  CHECK(calls == 2);
  CHECK(a.sizes() == torch::IntArrayRef{2, 3, 16, 16});
  CHECK(a.abs().max().item<float>() <= 1.0f);
  o.on_step = {};
  CHECK(torch::equal(m.generate({"a red circle"}, o), m.generate({"a red circle"}, o)));
  o.seed = 5;
  const auto b = m.generate({"a red circle"}, o);
  o.seed = 4;
  CHECK_FALSE(torch::equal(m.generate({"a red circle"}, o), b));
  CHECK_THROWS_AS(pipeline::TrainedModel<pipeline::SD3PixelRecipe>(d / "nothing"), InputError);

  // Guidance in an interval of t: an interval no sampling step falls in is the unguided model,
  // the full interval is plain CFG, one that covers some steps is neither.
  o.steps = 4;
  o.cfg = 1.0;
  const auto unguided = m.generate({"a red circle"}, o);
  o.cfg = 4.0;
  const auto full = m.generate({"a red circle"}, o);
  o.cfg_interval = {0.0, 0.0};  // the sampler never evaluates at t = 0
  CHECK(torch::allclose(m.generate({"a red circle"}, o), unguided, 1e-5, 1e-6));
  o.cfg_interval = {0.5, 1.0};
  const auto part = m.generate({"a red circle"}, o);
  CHECK_FALSE(torch::allclose(part, unguided, 1e-4, 1e-5));
  CHECK_FALSE(torch::allclose(part, full, 1e-4, 1e-5));
  o.cfg_interval = {0.0, 1.0};
  CHECK(torch::equal(m.generate({"a red circle"}, o), full));
  o.cfg_interval = {0.8, 0.2};
  CHECK_THROWS_AS(m.generate({"a red circle"}, o), InputError);
}

// A variant is another typedef: DDPM's LDM-linear process with eps-prediction and uniform t,
// trained and sampled through the same pipeline (the process form of the sampler).
using LDMVariant = pipeline::Pipeline<training::Objective<process::LDMLinear, timesteps::Uniform, weighting::Uniform, process::Eps>,
                                      encoders::CaptionConditioning, backbone::MMDiTBackbone<backbone::QKNorm::None>,
                                      autoencoder::PixelSpace, pipeline::EulerWithShift>;

TEST_CASE("a variant typedef trains and samples with another process and backbone", "[pipeline][training]") {
  static_assert(!std::is_same_v<LDMVariant, pipeline::SD3PixelRecipe>);
  CHECK_THAT(LDMVariant::describe(), Catch::Contains("objective=linear/uniform/uniform") && Catch::Contains("backbone=mmdit "));
  TempDir d;
  training::Trainer<LDMVariant> t(d / "m", tiny_config(), false);
  CHECK_FALSE(t.model()->config().qk_norm);
  const auto r = t.run();
  CHECK(std::isfinite(r.final_loss));
  const auto imgs = t.sample({"a red circle"}, 1);
  CHECK(imgs.sizes() == torch::IntArrayRef{1, 3, 16, 16});
  CHECK(torch::isfinite(imgs).all().item<bool>());
}

TEST_CASE("the SD3 recipe trains in the latent space of a frozen KL autoencoder", "[pipeline][training]") {
  TempDir d;
  torch::manual_seed(0);
  autoencoder::KLAutoencoder vae(autoencoder::KLAutoencoderConfig{32, {1, 2}, 1, 3, 4, 32});
  std::vector<std::pair<std::string, torch::Tensor>> w;
  for (const auto& p : vae->named_parameters(true)) w.emplace_back(p.key(), p.value());
  io::save_safetensors(d / "vae.safetensors", w);
  auto c = tiny_config();
  c.model.patch = 2;
  c.autoencoder_weights = (d / "vae.safetensors").string();
  training::Trainer<pipeline::SD3Recipe> t(d / "m", c, false);
  CHECK(t.model()->config().in_channels == 4);  // the autoencoder's latent channels
  CHECK(t.model()->config().qk_norm);
  t.run();
  const auto imgs = t.sample({"a red circle"}, 1);
  CHECK(imgs.sizes() == torch::IntArrayRef{1, 3, 16, 16});  // decoded back to pixels
  c.autoencoder_weights = "";
  CHECK_THROWS_WITH(training::Trainer<pipeline::SD3Recipe>(d / "m2", c, false), Catch::Contains("autoencoder"));
}

// `diffuse train ARGS` started in the background (stdout and stderr to `log`); returns its pid.
TEST_CASE("diffuse train: a run is fixed by its config and seed; SIGKILL and --resume give the same weights", "[pipeline][cli]") {
  // Issue 29: precision "auto" and the worker count are decided by the CPU, once, and recorded; the
  // tokenizer is byte-identical; --resume without a budget finishes the run's own.
  TempDir d;
  auto c = tiny_config();
  c.precision = "auto";
  c.workers = 0;
  c.steps = 100;  // ~10 ms a step here: the kill after 15 has ~85 steps of margin before the end
  c.checkpoint_every = 10;
  c.log_every = 10;
  std::ofstream(d / "cfg.json") << config_to_string(c);
  const auto cfg = " --config " + (d / "cfg.json").string();
  for (const char* run : {"a", "b"}) {
    const auto r = test::run_cli("train" + cfg + " --out " + (d / run).string());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
  }
  auto file = [&](const std::string& run, const std::string& name) { return test::read_text(d / run / name); };
  const auto straight = losses(d / "a" / "metrics.jsonl");
  REQUIRE(straight.size() == 100);
  CHECK(straight == losses(d / "b" / "metrics.jsonl"));
  CHECK(file("a", "tokenizer.model") == file("b", "tokenizer.model"));
  CHECK(file("a", "config.json") == file("b", "config.json"));
  CHECK(file("a", "config.json").find("\"auto\"") == std::string::npos);  // the choice, not "auto"
  for (const char* f : {"ckpt-0000100/model.safetensors", "ckpt-0000100/ema.safetensors"}) {
    INFO(f);
    CHECK(file("a", f).size() > 1000);
    CHECK(file("a", f) == file("b", f));
  }
  // Killed with SIGKILL between checkpoints, then resumed without --steps.
  const auto k = d / "k";
  const pid_t pid = start_cli("train" + cfg + " --out " + k.string(), d / "k.log");
  REQUIRE(pid > 0);
  std::size_t seen = 0;
  int status = 0;
  bool exited = false;
  for (int i = 0; i < 60000 && seen < 15; ++i) {  // up to ~2 minutes
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    seen = losses(k / "metrics.jsonl").size();
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  INFO("killed after " << seen << " logged steps; log: " << test::read_text(d / "k.log"));
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(WTERMSIG(status) == SIGKILL);
  const auto at_kill = losses(k / "metrics.jsonl").size();
  REQUIRE(at_kill >= 15);
  REQUIRE(at_kill < 100);  // killed before the end, between two checkpoints (every 10 steps)
  const auto r = test::run_cli("train --out " + k.string() + " --resume");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("resumed at step") && Catch::Contains("step 100/100"));
  CHECK(losses(k / "metrics.jsonl") == straight);
  for (const char* f : {"ckpt-0000100/model.safetensors", "ckpt-0000100/ema.safetensors"}) {
    INFO(f);
    CHECK(file("k", f) == file("a", f));
  }
  // The saved config cannot be changed on resume; the budget can.
  const auto bad = test::run_cli("train --out " + k.string() + " --resume --seed 3");
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Catch::Contains("saved config.json"));
}

TEST_CASE("diffuse train, sample and eval work end to end and refuse bad input", "[pipeline][cli]") {
  TempDir d;
  std::ofstream(d / "tiny.json") << config_to_string(tiny_config());
  const auto out = (d / "m").string();
  auto r = test::run_cli("train --config " + (d / "tiny.json").string() + " --out " + out + " --steps 4");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("step 4/4") && Catch::Contains("it/s") && Catch::Contains("ETA"));
  r = test::run_cli("train --config " + (d / "tiny.json").string() + " --out " + out + " --steps 4");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("--resume"));
  r = test::run_cli("train --out " + out + " --steps 6 --resume");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("resumed at step 4"));
  const auto png = (d / "s.png").string();
  r = test::run_cli("sample --checkpoint " + out + " --prompt 'a red circle' --seed 3 --steps 2 --cfg 2.5 --out " + png);
  REQUIRE(r.exit_code == 0);
  const auto img = io::read_png(png);
  CHECK(img.shape()[0] == 16 * 4 + 4);  // one 16 px image at scale 4 with 2 px gutters
  std::map<std::string, std::string> text;
  for (const auto& [k, v] : io::read_png_text(png)) text[k] = v;
  CHECK(text["prompt"] == "a red circle");
  CHECK(text["seed"] == "3");
  CHECK(text["steps"] == "2");
  CHECK(std::stod(text["cfg"]) == 2.5);
  CHECK(text["sampler"] == "euler/linear");
  CHECK(text.count("shift") == 1);
  CHECK(text["model_hash"].size() == 16);
  CHECK(text["cfg_interval"] == "[0, 1]");  // the model's default: every step
  r = test::run_cli("sample --checkpoint " + out + " --prompt 'a red circle' --steps 2 --cfg-interval 0.2,0.8 --out " + png);
  REQUIRE(r.exit_code == 0);
  text.clear();
  for (const auto& [k, v] : io::read_png_text(png)) text[k] = v;
  CHECK(text["cfg_interval"] == "[0.2, 0.8]");
  CHECK(test::run_cli("sample --checkpoint " + out + " --prompt x --cfg-interval 0.8,0.2 --out " + png).exit_code == 2);
  CHECK(test::run_cli("sample --checkpoint " + out + " --prompt x --cfg-interval 0.5 --out " + png).exit_code == 2);
  std::ofstream(d / "prompts.json") << R"([{"prompt": "a red circle", "category": "single_object", "held_out": false},
    {"prompt": "two blue squares", "category": "counting", "held_out": false}])";
  r = test::run_cli("eval --checkpoint " + out + " --prompts " + (d / "prompts.json").string() + " --steps 2 --out " + (d / "ev").string());
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("overall") && Catch::Contains("strict"));
  const auto ev = nlohmann::json::parse(test::read_text(d / "ev" / "eval.json"));
  CHECK(ev["categories"]["single_object"]["total"] == 1);
  CHECK(ev["categories"]["counting"]["total"] == 1);
  CHECK(test::run_cli("sample --checkpoint " + (d / "none").string() + " --prompt x --out " + png).exit_code == 2);
  CHECK(test::run_cli("sample --checkpoint " + out + " --prompt x --steps 0 --out " + png).exit_code == 2);
  CHECK(test::run_cli("train --out " + (d / "bad").string() + " --recipe nope --steps 1").exit_code == 2);

  // The trained folder is a base for LoRA fine-tuning on an image folder of one category; the LoRA
  // then loads in sample and eval, and at strength 0 samples the base image.
  REQUIRE(test::run_cli("shapes dataset --count 8 --size 16 --category position --seed 9 --out " + (d / "pos").string()).exit_code == 0);
  const auto lora = (d / "lora").string();
  r = test::run_cli("train --init " + out + " --data " + (d / "pos").string() + " --out " + lora +
                    " --steps 3 --batch 4 --lora-rank 2 --lr 1e-2");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("bucket 16x16: 8 images"));
  CHECK_THAT(r.out, Catch::Contains("LoRA trained 3 steps"));
  const auto sample_with = [&](const std::string& extra, const std::string& file) {
    REQUIRE(test::run_cli("sample --checkpoint " + out + " --prompt 'a red circle above a blue square' --seed 3 --steps 2 " +
                          extra + " --out " + file).exit_code == 0);
    return io::read_png(file);
  };
  const auto base_img = sample_with("", (d / "b.png").string());
  const bool zero_is_base = sample_with("--lora " + lora + "/lora_kohya.safetensors:0", (d / "l0.png").string()) == base_img;
  CHECK(zero_is_base);
  const bool changed = !(sample_with("--lora " + lora + "/lora.safetensors:30", (d / "l1.png").string()) == base_img);
  CHECK(changed);
  r = test::run_cli("eval --checkpoint " + out + " --prompts " + (d / "prompts.json").string() + " --steps 2 --lora " + lora +
                    "/lora.safetensors");
  CHECK(r.exit_code == 0);
  CHECK(test::run_cli("sample --checkpoint " + out + " --prompt x --lora " + (d / "nope.safetensors").string() + " --out " + png)
            .exit_code == 2);
  // The LoRA's output folder stands for base + LoRA at strength 1.
  const bool folder_is_base_plus_lora =
      sample_with("--lora " + lora + "/lora.safetensors", (d / "l2.png").string()) ==
      [&] {
        REQUIRE(test::run_cli("sample --checkpoint " + lora + " --prompt 'a red circle above a blue square' --seed 3 --steps 2 --out " +
                              (d / "l3.png").string()).exit_code == 0);
        return io::read_png((d / "l3.png").string());
      }();
  CHECK(folder_is_base_plus_lora);

  // DPO pairs from the model's own samples: prompts from the training distribution, none of the
  // evaluation set, the categories in turn. This barely trained model gets (nearly) every image
  // wrong: either pairs whose images exist, or none and exit 1 with the reason.
  r = test::run_cli("pairs --checkpoint " + out + " --out " + (d / "pairs").string() + " --prompts 12 --samples 2 --steps 2");
  INFO(r.err);
  if (r.exit_code == 0) {
    std::ifstream pairs(d / "pairs" / "pairs.jsonl");
    for (std::string line; std::getline(pairs, line);) {
      const auto j = nlohmann::json::parse(line);
      CHECK(std::filesystem::is_regular_file(d / "pairs" / j["chosen"].get<std::string>()));
      CHECK(std::filesystem::is_regular_file(d / "pairs" / j["rejected"].get<std::string>()));
    }
  } else {
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("no pairs"));
  }
  std::set<std::string> evaluation;
  for (const auto& p : data::make_eval_prompts()) evaluation.insert(p.prompt);
  std::ifstream judged(d / "pairs" / "prompts.jsonl");
  int lines = 0;
  std::map<std::string, int> per_category;
  for (std::string line; std::getline(judged, line); ++lines) {
    const auto j = nlohmann::json::parse(line);
    CHECK(evaluation.count(j["prompt"].get<std::string>()) == 0);
    ++per_category[j["category"].get<std::string>()];
    CHECK(j["samples"] == 2);
  }
  CHECK(lines == 12);
  // Categories in turn; one whose training prompts are all evaluation prompts is left out, said.
  CHECK(per_category.size() >= 4);
  for (const auto& [cat, n] : per_category) CHECK(n >= 12 / static_cast<int>(per_category.size()));
  if (per_category.size() < 6) CHECK_THAT(r.err, Catch::Contains("that category is left out"));
  CHECK(test::run_cli("pairs --checkpoint " + out + " --out " + (d / "p2").string() + " --samples 1").exit_code == 2);
}

}  // namespace t_pipeline
