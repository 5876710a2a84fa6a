// SD3's text stack on tiny encoders written by the test (the real key layout, small widths): the
// assembly, missing encoders, the all-in-one vs separate files, T5 lengths, per-encoder dropout,
// missing tokenizers, and the pipeline slot.
#include <catch2/catch.hpp>

#include <fstream>

#include <torch/torch.h>

#include "diffuse/encoders/sd3_text_conditioning.hpp"
#include "diffuse/encoders/sentencepiece.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/pipeline/pipeline.hpp"
#include "encoders/tiny_text_stack.hpp"
#include "test_util.hpp"

namespace t_sd3_text {

using diffuse::test::TinyStack;
using namespace diffuse;
using namespace diffuse::encoders;
using Catch::Matchers::Contains;

TEST_CASE("SD3 text stack: context and pooled assembled from the three encoders", "[encoders][sd3text]") {
  TinyStack s;
  const auto stack = SD3TextConditioning::load(s.all_in_one());
  CHECK(stack.width() == 160);
  CHECK(stack.pooled_width() == 128);
  CHECK(stack.length() == 154);
  const std::vector<std::string> prompts{"a red circle", ""};
  const auto f = stack.encode(prompts);
  REQUIRE(f.context.sizes() == torch::IntArrayRef({2, 154, 160}));
  REQUIRE(f.pooled.sizes() == torch::IntArrayRef({2, 128}));
  // Each block equals its encoder run on SD3's token rows.
  torch::NoGradGuard ng;
  const auto& tok = *stack.clip_tokenizer();
  auto rows = [&](std::int64_t pad) {
    auto t = torch::empty({2, 77}, torch::kLong);
    for (int i = 0; i < 2; ++i) t[i].copy_(torch::tensor(tok.sd3_chunks(prompts[static_cast<std::size_t>(i)], pad)[0].ids));
    return t;
  };
  const auto lo = s.l->forward(rows(59)), go = s.g->forward(rows(0));
  CHECK(torch::allclose(f.context.narrow(1, 0, 77).narrow(2, 0, 64), lo.penultimate(), 1e-5, 1e-6));
  CHECK(torch::allclose(f.context.narrow(1, 0, 77).narrow(2, 64, 64), go.penultimate(), 1e-5, 1e-6));
  CHECK(f.context.narrow(1, 0, 77).narrow(2, 128, 32).abs().max().item<float>() == 0.f);  // zero-padded to T5's width
  CHECK(torch::allclose(f.pooled.narrow(1, 0, 64), lo.pooled, 1e-5, 1e-6));             // CLIP-L: unprojected
  CHECK(torch::allclose(f.pooled.narrow(1, 64, 64), go.pooled_projected, 1e-5, 1e-6));  // CLIP-G: projected
  const auto t5 = s.t->forward(stack.t5_tokens(prompts)).last_hidden;
  CHECK(torch::allclose(f.context.narrow(1, 77, 77), t5, 1e-5, 1e-6));
  // The empty prompt is encoded, not zeroed (the reference's negative prompt).
  CHECK(f.context[1].abs().max().item<float>() > 0.f);
  // Separate files give the same tensors.
  const auto f2 = SD3TextConditioning::load(s.separate()).encode(prompts);
  CHECK(torch::equal(f.context, f2.context));
  CHECK(torch::equal(f.pooled, f2.pooled));
  CHECK(stack.fingerprint() != SD3TextConditioning::load(s.separate()).fingerprint());
}

TEST_CASE("SD3 text stack: absent encoders give zeros of their shape; T5 lengths", "[encoders][sd3text]") {
  TinyStack s;
  auto src = s.separate();
  src.t5.clear();
  SD3TextOptions o;
  o.shape.t5_width = 160;
  const auto no_t5 = SD3TextConditioning::load(src, o);
  CHECK(!no_t5.has_t5());
  const auto full = SD3TextConditioning::load(s.separate()).encode({"a red circle"});
  const auto part = no_t5.encode({"a red circle"});
  REQUIRE(part.context.sizes() == torch::IntArrayRef({1, 154, 160}));
  CHECK(part.context.narrow(1, 77, 77).abs().max().item<float>() == 0.f);
  CHECK(torch::equal(part.context.narrow(1, 0, 77), full.context.narrow(1, 0, 77)));
  CHECK(torch::equal(part.pooled, full.pooled));
  src = s.separate();
  src.clip_l.clear();
  SD3TextOptions lo;
  lo.shape.clip_l_width = 64;  // an absent encoder's width comes from the options (SD3's 768 by default)
  const auto no_l = SD3TextConditioning::load(src, lo).encode({"a red circle"});
  CHECK(no_l.context.narrow(1, 0, 77).narrow(2, 0, 64).abs().max().item<float>() == 0.f);
  CHECK(no_l.pooled.narrow(1, 0, 64).abs().max().item<float>() == 0.f);
  CHECK(torch::equal(no_l.pooled.narrow(1, 64, 64), full.pooled.narrow(1, 64, 64)));
  // T5 length: 0 follows the reference (max(77, tokens)); N pads or cuts with EOS kept last.
  SD3TextOptions longer;
  longer.t5_length = 100;
  CHECK(SD3TextConditioning::load(s.separate(), longer).encode({"a"}).context.size(1) == 177);
  SD3TextOptions shorter;
  shorter.t5_length = 5;
  const auto cut = SD3TextConditioning::load(s.separate(), shorter);
  const auto rows = cut.t5_tokens({"a red circle and blue squares left of the green triangle"});
  REQUIRE(rows.size(1) == 5);
  CHECK(rows[0][4].item<std::int64_t>() == 1);
  SD3TextOptions ref;
  ref.t5_length = 0;
  CHECK(SD3TextConditioning::load(s.separate(), ref).t5_tokens({"a", "b"}).size(1) == 77);
}

TEST_CASE("SD3 text stack: per-encoder dropout at 46.4%, independent, zeroing each encoder's slices",
          "[encoders][sd3text]") {
  TinyStack s;
  const auto stack = SD3TextConditioning::load(s.separate());
  CHECK(stack.drop_rate() == Approx(0.464));
  const std::int64_t n = 20000;
  auto ctx = torch::ones({n, 154, 160});
  auto pooled = torch::ones({n, 128});
  auto gen = at::detail::createCPUGenerator(7);
  stack.apply_dropout(ctx, pooled, stack.drop_rate(), gen);
  const auto kl = pooled.select(1, 0), kg = pooled.select(1, 64), kt = ctx.select(1, 100).select(1, 0);
  CHECK(1 - kl.mean().item<double>() == Approx(0.464).margin(0.015));
  CHECK(1 - kg.mean().item<double>() == Approx(0.464).margin(0.015));
  CHECK(1 - kt.mean().item<double>() == Approx(0.464).margin(0.015));
  const double all_dropped = ((1 - kl) * (1 - kg) * (1 - kt)).mean().item<double>();
  CHECK(all_dropped == Approx(0.464 * 0.464 * 0.464).margin(0.01));  // ~10%, as the paper says
  // Slices follow their encoder's mask; the zero-padding columns are untouched ones here.
  CHECK(torch::equal(ctx.select(1, 3).select(1, 10), kl));
  CHECK(torch::equal(ctx.select(1, 3).select(1, 70), kg));
  CHECK(torch::equal(pooled.select(1, 100), kg));
  CHECK(ctx.select(1, 3).select(1, 150).min().item<float>() == 1.f);
}

TEST_CASE("SD3 text stack: missing tokenizers and wrong files are named", "[encoders][sd3text]") {
  TinyStack s;
  auto src = s.separate();
  src.tokenizers.clear();
  CHECK_THROWS_WITH(SD3TextConditioning::load(src), Contains("no CLIP tokenizer") && Contains("openai/CLIP"));
  src.tokenizers = (s.dir / "nowhere").string();
  CHECK_THROWS_WITH(SD3TextConditioning::load(src), Contains("nowhere") && Contains("not found"));
  src = s.separate();
  src.clip_l.clear();
  src.clip_g.clear();
  std::filesystem::remove(s.dir / "tok/spiece.model");
  CHECK_THROWS_WITH(SD3TextConditioning::load(src), Contains("spiece.model") && Contains("t5-v1_1-xxl"));
  src = s.separate();
  src.clip_l = src.t5;  // a T5 file given as CLIP-L
  CHECK_THROWS_WITH(SD3TextConditioning::load(src), Contains("holds no CLIP text model"));
}

// The stack fills a pipeline's conditioning slot (SD3's inference recipe is this typedef).
using SD3TextPipeline = pipeline::Pipeline<pipeline::SD3Objective, SD3TextConditioning,
                                           backbone::MMDiTBackbone<backbone::QKNorm::None>,
                                           autoencoder::FrozenKL<autoencoder::SD3LatentFormat>, pipeline::EulerWithShift>;
static_assert(pipeline::ConditioningEncoder<SD3TextConditioning>);
TEST_CASE("SD3 text stack fits the pipeline's conditioning slot", "[encoders][sd3text]") {
  CHECK_THAT(SD3TextPipeline::describe(), Contains("conditioning=sd3-text"));
}

}  // namespace t_sd3_text
