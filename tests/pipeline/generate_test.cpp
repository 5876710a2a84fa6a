// SD3 generation end to end on a tiny checkpoint written by the test in the real key layouts (tiny
// text stack, MM-DiT and autoencoder): determinism, the all-in-one / split / diffusers forms, missing
// encoders and tokenizers, the PNG parameters round trip, and bad inputs through `diffuse generate`.
#include <catch2/catch.hpp>

#include <map>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/pipeline/sd3_generator.hpp"
#include "backbone/tiny_controlnet.hpp"
#include "diffuse/backbone/controlnet_config.hpp"
#include "pipeline/tiny_sd3.hpp"
#include "test_util.hpp"

namespace t_generate {

using namespace diffuse;
using Catch::Matchers::Contains;

using diffuse::test::TinySD3;

pipeline::GenerateRequest request(std::vector<std::string> prompts, std::uint64_t seed = 7) {
  pipeline::GenerateRequest r;
  r.prompts = std::move(prompts);
  r.width = r.height = 64;
  r.steps = 3;
  r.seed = seed;
  return r;
}

pipeline::SD3GeneratorOptions f32() {
  pipeline::SD3GeneratorOptions o;
  o.dtype = torch::kFloat32;
  return o;
}

TEST_CASE("SD3 generation: deterministic per seed, batch-independent, the same from all three file forms", "[pipeline][generate]") {
  TinySD3 m;
  pipeline::SD3ModelFiles tok;
  tok.tokenizers = m.tok();
  const auto files = pipeline::find_sd3_model(m.all(), tok);
  CHECK(files.mmdit == m.all());
  CHECK(files.vae == m.all());
  CHECK(files.clip_l == m.all());
  CHECK(files.t5 == m.all());
  CHECK(files.family == "custom");
  pipeline::SD3Generator gen(files, f32());
  const auto a = gen.generate(request({"a red circle"}));
  REQUIRE(a.sizes() == torch::IntArrayRef({1, 3, 64, 64}));
  CHECK(torch::isfinite(a).all().item<bool>());
  CHECK(torch::equal(a, gen.generate(request({"a red circle"}))));                // load once, generate many
  CHECK(!torch::allclose(a, gen.generate(request({"a red circle"}, 8))));         // another seed
  CHECK(!torch::allclose(a, gen.generate(request({"a blue square"}))));           // another prompt
  const auto two = gen.generate(request({"a blue square", "a red circle"}, 6));   // image i uses seed + i
  CHECK(torch::allclose(two[1], a[0], 1e-4, 1e-5));
  // Split files and the diffusers folder hold the same weights: the same image.
  pipeline::SD3ModelFiles split;
  split.vae = (m.dir / "vae.safetensors").string();
  split.clip_l = (m.dir / "clip_l.safetensors").string();
  split.clip_g = (m.dir / "clip_g.safetensors").string();
  split.t5 = (m.dir / "t5.safetensors").string();
  split.tokenizers = m.tok();
  pipeline::SD3Generator from_split(pipeline::find_sd3_model((m.dir / "mmdit.safetensors").string(), split), f32());
  CHECK(torch::allclose(from_split.generate(request({"a red circle"})), a, 1e-5, 1e-6));
  const auto dfiles = pipeline::find_sd3_model((m.dir / "diffusers").string());
  CHECK(dfiles.clip_g == (m.dir / "diffusers/text_encoder_2/model.safetensors").string());
  CHECK(dfiles.t5 == (m.dir / "diffusers/text_encoder_3").string());  // sharded: the folder, all shards read
  pipeline::SD3Generator from_diffusers(dfiles, f32());
  CHECK(torch::allclose(from_diffusers.generate(request({"a red circle"})), a, 1e-5, 1e-6));
  // The MM-DiT's weights as stored and laid out column-major (the two float32 CPU kernels, which
  // sum in different orders): the same image up to rounding (observed 4.3e-6 on values in [-1, 1]).
  // Without a choice (as `a` was made) the layout is column-major where the library may use
  // AVX-512, else as stored: that choice repeats `a` exactly (same kernels, same inputs). Whether
  // the other layout's kernel rounds differently is the machine's business, not asserted
  // (mmdit_test checks which layout loading chose).
  const bool avx512 = diffuse::use_avx512f();
  for (const auto layout : {nn::WeightLayout::RowMajor, nn::WeightLayout::ColumnMajor}) {
    auto o = f32();
    o.weight_layout = layout;
    pipeline::SD3Generator g(files, o);
    const auto img = g.generate(request({"a red circle"}));
    CHECK((img - a).abs().max().item<double>() < 1e-4);
    const bool is_default = avx512 == (layout == nn::WeightLayout::ColumnMajor);
    INFO("layout " << (layout == nn::WeightLayout::ColumnMajor ? "column" : "row"));
    if (is_default) CHECK(torch::equal(img, a));
  }
  // Stages released after use give the same image.
  auto low = f32();
  low.release_stages = true;
  pipeline::SD3Generator lean(files, low);
  CHECK(torch::allclose(lean.generate(request({"a red circle"})), a, 1e-5, 1e-6));
}

TEST_CASE("SD3 generation: missing T5 and missing tokenizers; the step callback can stop", "[pipeline][generate]") {
  TinySD3 m;
  pipeline::SD3ModelFiles tok;
  tok.tokenizers = m.tok();
  auto o = f32();
  o.no_t5 = true;
  pipeline::SD3Generator no_t5(pipeline::find_sd3_model(m.all(), tok), o);
  CHECK(no_t5.files().t5.empty());
  const auto img = no_t5.generate(request({"a red circle"}));
  CHECK(torch::isfinite(img).all().item<bool>());
  pipeline::SD3Generator full(pipeline::find_sd3_model(m.all(), tok), f32());
  CHECK(!torch::allclose(img, full.generate(request({"a red circle"}))));
  CHECK_THROWS_WITH(pipeline::SD3Generator(pipeline::find_sd3_model(m.all()), f32()), Contains("no CLIP tokenizer"));
  int calls = 0;
  auto r = request({"a red circle"});
  r.on_step = [&](const sampling::StepInfo&) { return ++calls < 2; };
  full.generate(r);
  CHECK(calls == 2);
  auto bad = request({"x"});
  bad.width = 72;
  CHECK_THROWS_WITH(full.generate(bad), Contains("multiples of 16"));
  CHECK_THROWS_WITH(pipeline::find_sd3_model((m.dir / "vae.safetensors").string()), Contains("holds no MM-DiT"));
  CHECK_THROWS_WITH(pipeline::find_sd3_model((m.dir / "mmdit.safetensors").string()), Contains("no VAE"));
}

TEST_CASE("generation parameters: the A1111 / stable-diffusion.cpp text form round-trips", "[pipeline][generate]") {
  pipeline::GenerateSettings s{1024, 768, 28, 7.0, 3.0, 2.5, "dpmpp_2m", {7, 8, 9}};
  const auto t = pipeline::parameters_text("a cat,\nin two lines", "blurry", s, 42, "SD3.5-medium", "diffuse 0.1.0");
  CHECK(t == "a cat,\nin two lines\nNegative prompt: blurry\nSteps: 28, Sampler: dpmpp_2m, CFG scale: 7, Seed: 42, Size: 1024x768, "
             "Model: SD3.5-medium, Shift: 3, SLG scale: 2.5, Skip layers: 7 8 9, Version: diffuse 0.1.0");
  const auto p = pipeline::parse_parameters_text(t);
  CHECK(p.at("prompt") == "a cat,\nin two lines");
  CHECK(p.at("negative") == "blurry");
  CHECK(p.at("Seed") == "42");
  CHECK(p.at("Size") == "1024x768");
  CHECK(p.at("Skip layers") == "7 8 9");
  CHECK_THROWS_AS(pipeline::parse_parameters_text("one line"), InputError);
}

TEST_CASE("diffuse generate writes a PNG whose parameters diffuse inspect reads back; bad input exits 2", "[pipeline][generate][cli]") {
  TinySD3 m;
  const auto out = (m.dir / "img.png").string();
  const std::string base = "generate --model " + m.all() + " --tokenizers " + m.tok() + " --width 64 --height 64 --steps 2 --dtype f32";
  auto r = diffuse::test::run_cli(base + " --prompt 'a red circle' --negative 'blurry' --seed 5 --out " + out);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("generate 2/2") && Contains("ETA") && Contains("peak RSS") && Contains("later steps") &&
             Contains("sampling starts after") && Contains("first step"));
  const auto img = io::read_png(out);
  CHECK(img.shape(0) == 64);
  r = diffuse::test::run_cli("inspect " + out + " --json");
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["parameters"]["prompt"] == "a red circle");
  CHECK(j["parameters"]["negative"] == "blurry");
  CHECK(j["parameters"]["Seed"] == "5");
  CHECK(j["parameters"]["Steps"] == "2");
  CHECK(j["parameters"]["Size"] == "64x64");
  // Two prompts x batch 2: four numbered files, seeds 5..8.
  r = diffuse::test::run_cli(base + " --prompt a --prompt b --batch 2 --seed 5 --out " + (m.dir / "many.png").string());
  REQUIRE(r.exit_code == 0);
  CHECK(std::filesystem::exists(m.dir / "many_003.png"));
  CHECK_THAT(diffuse::test::run_cli("inspect " + (m.dir / "many_003.png").string()).out, Contains("Seed: 8"));
  // Bad inputs: a width not divisible by 16, a file of the wrong family, a truncated file, no tokenizers.
  r = diffuse::test::run_cli("generate --model " + m.all() + " --tokenizers " + m.tok() + " --prompt x --width 70 --height 64 --out " + out);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("multiples of 16"));
  r = diffuse::test::run_cli("generate --model " + (m.dir / "t5.safetensors").string() + " --prompt x --out " + out);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("holds no MM-DiT"));
  r = diffuse::test::run_cli(base + " --prompt x --weight-layout diagonal --out " + out);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("--weight-layout must be auto, row or column"));
  {
    const auto bytes = diffuse::test::read_text(m.all());
    diffuse::test::write_bytes(m.dir / "cut.safetensors", bytes.substr(0, bytes.size() / 2));
  }
  r = diffuse::test::run_cli("generate --model " + (m.dir / "cut.safetensors").string() + " --prompt x --out " + out);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("cut.safetensors"));
  r = diffuse::test::run_cli("generate --model " + m.all() + " --prompt x --width 64 --height 64 --out " + out);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("tokenizer") && Contains("--tokenizers"));
}

TEST_CASE("the starting noise is the reference's: torch.manual_seed(seed + i), randn of (1, 16, h, w)", "[pipeline][generate]") {
  // sd3_infer.py get_noise(42, latent) for a (1, 16, 4, 4) latent, printed by /usr/bin/python3 with
  // Debian's python3-torch 1.13: torch.randn(size, generator=torch.manual_seed(42)).flatten().
  const auto noise = sampling::initial_noise(3, 16, 4, 4, 42);
  const auto first = noise[0].flatten();
  const double expected[] = {1.9269152879714966, 1.4872840642929077, 0.9007171988487244, -2.1055209636688232,
                             0.6784184575080872, -1.2345448732376099};
  for (int i = 0; i < 6; ++i) CHECK(first[i].item<double>() == Approx(expected[i]).epsilon(1e-7));
  CHECK(first[255].item<double>() == Approx(0.22245365381240845).epsilon(1e-7));
  CHECK(noise[0].sum().item<double>() == Approx(16.138675689697266).epsilon(1e-6));
  // Image i is seed + i's first image (the reference's "roll" seeds), whatever the batch.
  CHECK(torch::equal(noise[2], sampling::initial_noise(1, 16, 4, 4, 44)[0]));
  // The library's own pipelines start from the same noise (pipeline::generate for trained models).
  CHECK(torch::equal(sampling::initial_noise(1, 4, 8, 8, 5)[0], torch::randn({4, 8, 8}, at::detail::createCPUGenerator(5))));
}

TEST_CASE("generation through a pipeline typedef; the sampler method from a compile-time list", "[pipeline][generate]") {
  static_assert(std::is_same_v<pipeline::SD3Generator, pipeline::BasicSD3Generator<pipeline::SD3Inference>>);
  static_assert(std::is_same_v<pipeline::SD3Inference::sampler_type::schedule_type, sampling::ReferenceSchedule>);
  static_assert(std::is_same_v<pipeline::SD3Inference::conditioning_type, encoders::SD3TextConditioning>);
  using Choice = pipeline::SD3Generator::method_choice;
  CHECK(Choice::names() == "euler, heun, dpmpp_2m");
  CHECK(Choice("heun").name() == "heun");
  CHECK_THROWS_WITH(Choice("lms"), Contains("sampler must be one of euler, heun, dpmpp_2m") && Contains("'lms'"));
  // A program's own typedefs: the same parts with the MM-DiT's QK-norm fixed in the type. The tiny
  // model has none: QKNorm::None takes it and makes SD3Inference's image; QKNorm::RMS refuses it.
  using NoQKNorm = pipeline::Pipeline<pipeline::SD3Objective, encoders::SD3TextConditioning,
                                      backbone::MMDiTBackbone<backbone::QKNorm::None>,
                                      autoencoder::FrozenKL<autoencoder::SD3LatentFormat>,
                                      sampling::ScheduledSampler<sampling::Euler, sampling::ReferenceSchedule>>;
  using WithQKNorm = pipeline::Pipeline<pipeline::SD3Objective, encoders::SD3TextConditioning,
                                        backbone::MMDiTBackbone<backbone::QKNorm::RMS>,
                                        autoencoder::FrozenKL<autoencoder::SD3LatentFormat>,
                                        sampling::ScheduledSampler<sampling::Euler, sampling::ReferenceSchedule>>;
  TinySD3 m;
  pipeline::SD3ModelFiles tok;
  tok.tokenizers = m.tok();
  const auto files = pipeline::find_sd3_model(m.all(), tok);
  pipeline::SD3Generator any(files, f32());
  pipeline::BasicSD3Generator<NoQKNorm> fixed(files, f32());
  auto r = request({"a red circle"});
  CHECK(torch::equal(any.generate(r), fixed.generate(r)));
  CHECK_THROWS_WITH(pipeline::BasicSD3Generator<WithQKNorm>(files, f32()), Contains("has no QK-norm") && Contains("mmdit-qknorm"));
  r.sampler = "lms";  // outside the list: refused before any work
  CHECK_THROWS_WITH(any.generate(r), Contains("sampler must be one of"));
}

TEST_CASE("PNG bytes: to the nearest, or cut as the reference's vae_decode cuts them", "[pipeline][generate]") {
  // 255 (x + 1) / 2 for x = -1, 0.001, 0.999, 1: 0, 127.6275, 254.8725, 255.
  const auto x = torch::tensor({-1.0f, 0.001f, 0.999f, 1.0f}).view({1, 1, 4}).expand({3, 1, 4});
  const auto nearest = io::to_rgb(x), cut = io::to_rgb(x, io::Quantize::Truncate);
  const int expect_nearest[] = {0, 128, 255, 255}, expect_cut[] = {0, 127, 254, 255};
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(static_cast<int>(nearest(0, i, 0)) == expect_nearest[i]);
    CHECK(static_cast<int>(cut(0, i, 2)) == expect_cut[i]);
  }
}

TEST_CASE("diffuse generate --dry-run prints the resolved settings and their sources without loading weights", "[pipeline][generate][cli]") {
  TinySD3 m;
  const std::string base = "generate --tokenizers " + m.tok() + " --prompt x --dry-run";
  auto r = diffuse::test::run_cli(base + " --model " + m.all());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["family"] == "custom");
  CHECK(j["defaults"]["identified_by"] == "fallback");
  CHECK(j["defaults"]["config"].is_null());
  CHECK_THAT(j["defaults"]["note"].get<std::string>(), Contains("unknown model"));
  CHECK_THAT(r.err, Contains("unknown model"));  // said on stderr too
  CHECK(j["settings"]["steps"]["value"] == 50);
  CHECK(j["settings"]["cfg"]["value"] == 5.0);
  CHECK(j["settings"]["sampler"]["value"] == "dpmpp_2m");
  CHECK(j["settings"]["shift"]["value"] == 3.0);
  CHECK(j["settings"]["width"]["value"] == 1024);
  CHECK_THAT(j["settings"]["steps"]["from"].get<std::string>(), Contains("fallback"));
  CHECK(j["settings"]["skip_layer_guidance"]["scale"] == 0.0);
  CHECK(j["files"]["mmdit"]["form"] == "in the model file");
  CHECK(j["files"]["mmdit"]["layout"] == "original");
  CHECK(j["files"]["mmdit"]["prefix"] == "model.diffusion_model.");
  CHECK(j["files"]["t5"]["path"] == m.all());
  // A released file name picks its CONFIGS row; options override and say so; the SLG preset on request.
  std::filesystem::create_symlink(m.all(), m.dir / "sd3.5_medium.safetensors");
  r = diffuse::test::run_cli(base + " --model " + (m.dir / "sd3.5_medium.safetensors").string() +
                             " --steps 3 --skip-layer-cfg --no-t5");
  REQUIRE(r.exit_code == 0);
  j = nlohmann::json::parse(r.out);
  CHECK(j["defaults"]["config"] == "sd3.5_medium");
  CHECK(j["defaults"]["identified_by"] == "file name");
  CHECK(j["settings"]["steps"]["value"] == 3);
  CHECK(j["settings"]["steps"]["from"] == "--steps");
  CHECK(j["settings"]["cfg"]["value"] == 5.0);  // the preset's CFG 4 is not applied by the reference either
  CHECK_THAT(j["settings"]["cfg"]["from"].get<std::string>(), Contains("CONFIGS[\"sd3.5_medium\"] (by file name)"));
  CHECK(j["settings"]["skip_layer_guidance"]["scale"] == 2.5);
  CHECK(j["settings"]["skip_layer_guidance"]["layers"] == std::vector<int>{7, 8, 9});
  CHECK(j["files"]["t5"]["path"].is_null());
  // A diffusers folder: the parts' forms.
  r = diffuse::test::run_cli(base + " --model " + (m.dir / "diffusers").string());
  REQUIRE(r.exit_code == 0);
  j = nlohmann::json::parse(r.out);
  CHECK(j["files"]["vae"]["form"] == "diffusers folder");
  CHECK(j["files"]["vae"]["layout"] == "diffusers");
  // The preset where the reference has none is an error that says so.
  r = diffuse::test::run_cli(base + " --model " + m.all() + " --skip-layer-cfg");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("no skip-layer preset") && Contains("--slg-scale"));
  // So is a sampler it does not know, before any weights are read.
  r = diffuse::test::run_cli(base + " --model " + m.all() + " --sampler ddim");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("sampler must be one of euler, heun, dpmpp_2m, got 'ddim'"));
}

TEST_CASE("LoRA files change the generated image at their strength; strength 0 is the base image", "[pipeline][generate][lora]") {
  TinySD3 m;
  const auto& c = m.mmdit->config();
  const std::int64_t d = c.hidden_size();
  torch::manual_seed(21);
  io::save_safetensors(m.dir / "lora.safetensors",
                       {{"transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight", torch::randn({4, d}) * 0.2},
                        {"transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight", torch::randn({d, 4}) * 0.2},
                        {"transformer.transformer_blocks.1.ff.net.0.proj.lora_A.weight", torch::randn({4, d}) * 0.2},
                        {"transformer.transformer_blocks.1.ff.net.0.proj.lora_B.weight", torch::randn({c.mlp_hidden(), 4}) * 0.2}},
                       {{"format", "pt"}});
  const auto lora = (m.dir / "lora.safetensors").string();
  pipeline::SD3ModelFiles tok;
  tok.tokenizers = m.tok();
  const auto files = pipeline::find_sd3_model(m.all(), tok);
  const auto base = pipeline::SD3Generator(files, f32()).generate(request({"a red circle"}));
  auto with = [&](double strength) {
    auto o = f32();
    o.loras.push_back({lora, strength});
    return pipeline::SD3Generator(files, o).generate(request({"a red circle"}));
  };
  CHECK(torch::equal(with(0.0), base));  // strength 0: the base weights, bit for bit
  const auto full = with(1.0);
  CHECK((full - base).abs().max().item<double>() > 1e-3);
  // Two files, or the same file twice at half strength each: the same merged weights up to rounding.
  auto o = f32();
  o.loras = {{lora, 0.5}, {lora, 0.5}};
  CHECK((pipeline::SD3Generator(files, o).generate(request({"a red circle"})) - full).abs().max().item<double>() < 1e-4);
  // Through the command line: the PNG records the LoRA; a LoRA for another model exits 2 naming its key.
  const auto out = (m.dir / "lora.png").string();
  const std::string cli = "generate --model " + m.all() + " --tokenizers " + m.tok() + " --width 64 --height 64 --steps 2 --dtype f32 --prompt x";
  auto r = diffuse::test::run_cli(cli + " --lora " + lora + ":0.75 --out " + out);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::map<std::string, std::string> text;
  for (const auto& [k, v] : io::read_png_text(out)) text[k] = v;
  CHECK(text["loras"] == "lora.safetensors:0.750000");
  io::save_safetensors(m.dir / "other.safetensors", {{"transformer.transformer_blocks.7.attn.to_q.lora_A.weight", torch::zeros({4, d})},
                                                     {"transformer.transformer_blocks.7.attn.to_q.lora_B.weight", torch::zeros({d, 4})}});
  r = diffuse::test::run_cli(cli + " --lora " + (m.dir / "other.safetensors").string() + " --out " + (m.dir / "x.png").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("transformer.transformer_blocks.7.attn.to_q: matches no Linear layer"));
  r = diffuse::test::run_cli(cli + " --lora " + (m.dir / "missing.safetensors").string() + " --out " + (m.dir / "x.png").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("missing.safetensors: no such file"));
}

TEST_CASE("diffuse generate --controlnet: the control image steers it, resized; the name picks the settings; bad input exits 2", "[pipeline][generate][controlnet][cli]") {
  TinySD3 m;
  torch::NoGradGuard g;
  const auto base = m.mmdit->config();  // hidden 128 = its pooled width 128: the 8B form
  backbone::ControlNetConfig c;
  c.layers = 2;
  c.hidden = base.hidden_size();
  c.heads = base.num_heads();
  c.mlp_hidden = 4 * c.hidden;
  c.pooled_in = base.adm_in;
  c.interval = 1;
  backbone::ControlNet net(c, base);
  diffuse::test::randomize_controlnet(net, 21);
  const auto cn = m.dir / "sd3.5_large_controlnet_canny.safetensors";  // the released name: CONFIGS's row
  diffuse::test::write_controlnet(cn, net, 1);
  io::RGBImage control({24, 40, 3});  // not the output size: resized as the reference resizes it
  for (std::size_t y = 0; y < 24; ++y)
    for (std::size_t x = 0; x < 40; ++x)
      for (std::size_t ch = 0; ch < 3; ++ch) control(y, x, ch) = static_cast<std::uint8_t>(((x / 5 + y / 6) % 2) * 255);
  const auto img = (m.dir / "edges.png").string();
  io::write_png(img, control);
  const std::string base_cmd = "generate --model " + m.all() + " --tokenizers " + m.tok() +
                               " --prompt 'a red circle' --width 64 --height 48 --steps 3 --cfg 4 --sampler euler --dtype f32 --seed 3";
  const std::string with = " --controlnet " + cn.string() + " --control-image " + img;
  auto r = diffuse::test::run_cli(base_cmd + with + " --out " + (m.dir / "cn.png").string());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  r = diffuse::test::run_cli(base_cmd + " --out " + (m.dir / "plain.png").string());
  REQUIRE(r.exit_code == 0);
  r = diffuse::test::run_cli(base_cmd + with + " --control-strength 0 --out " + (m.dir / "zero.png").string());
  REQUIRE(r.exit_code == 0);
  const auto steered = io::read_png((m.dir / "cn.png").string()), plain = io::read_png((m.dir / "plain.png").string());
  REQUIRE(steered.shape(0) == 48);
  const bool differs = steered != plain, zero_is_plain = io::read_png((m.dir / "zero.png").string()) == plain;
  CHECK(differs);
  CHECK(zero_is_plain);  // strength 0 adds zeros
  // An init image of another size than asked for is resized too (it was refused before).
  r = diffuse::test::run_cli(base_cmd + " --init-img " + img + " --strength 0.5 --out " + (m.dir / "i2i.png").string());
  REQUIRE(r.exit_code == 0);
  CHECK(io::read_png((m.dir / "i2i.png").string()).shape(1) == 64);
  // --dry-run: the ControlNet's CONFIGS row (60 steps, CFG 3.5, euler, shift 3) and its form and type.
  r = diffuse::test::run_cli("generate --model " + m.all() + " --tokenizers " + m.tok() + " --prompt x --dry-run" + with);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["settings"]["steps"]["value"] == 60);
  CHECK(j["settings"]["cfg"]["value"] == 3.5);
  CHECK(j["settings"]["sampler"]["value"] == "euler");
  CHECK(j["settings"]["shift"]["value"] == 3.0);
  CHECK_THAT(j["settings"]["steps"]["from"].get<std::string>(), Contains("sd3.5_large_controlnet_canny") && Contains("ControlNet"));
  CHECK(j["settings"]["width"]["value"] == 40);  // the control image's size when none is given
  CHECK(j["controlnet"]["blocks"] == 2);
  CHECK(j["controlnet"]["control_type"]["name"] == "canny");
  CHECK_THAT(j["controlnet"]["preprocessing"].get<std::string>(), Contains("x * 255 * 0.5 + 0.5"));
  CHECK_THAT(j["controlnet"]["form"].get<std::string>(), Contains("8B"));
  // Bad inputs: no control image, a missing one, a control image alone, a ControlNet for another model.
  r = diffuse::test::run_cli(base_cmd + " --controlnet " + cn.string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("--control-image"));
  r = diffuse::test::run_cli(base_cmd + " --controlnet " + cn.string() + " --control-image " + (m.dir / "nope.png").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("nope.png"));
  r = diffuse::test::run_cli(base_cmd + " --control-image " + img);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("--controlnet"));
  auto wide = base;
  wide.depth = 3;  // hidden 192: another model's ControlNet
  c.hidden = wide.hidden_size();
  c.heads = 3;
  c.mlp_hidden = 4 * c.hidden;
  backbone::ControlNet other(c, wide);
  diffuse::test::write_controlnet(m.dir / "other.safetensors", other);
  r = diffuse::test::run_cli(base_cmd + " --control-image " + img + " --controlnet " + (m.dir / "other.safetensors").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("a ControlNet for another model"));
}

}  // namespace t_generate
