// CLIP text transformer and T5 encoder: hand-checkable properties on tiny models, key lists and
// preset sizes, load errors; with DIFFUSE_PARITY_TESTS every stored output of the reference cases
// ../shared/testdata/sd3ref/clip_a, clip_b and t5_a.
#include <catch2/catch.hpp>

#include <fstream>

#include <torch/torch.h>

#include "diffuse/encoders/clip_text_model.hpp"
#include "diffuse/encoders/t5_encoder.hpp"
#include "diffuse/io/safetensors.hpp"
#include "test_util.hpp"

namespace t_text_encoders {

using namespace diffuse;
using namespace diffuse::encoders;
using Catch::Matchers::Contains;

CLIPTextConfig tiny_clip(const std::string& act = "quick_gelu") { return {100, 16, 32, 3, 4, 64, act, true, 1e-5}; }
T5Config tiny_t5() { return {100, 32, 8, 4, 3, 48, 32, 128, 1e-6}; }

template <class M>
void randomise(M& m, int seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.normal_(0, 0.3);
}

std::set<std::pair<std::string, std::vector<std::int64_t>>> keyset(torch::nn::Module& m) {
  std::set<std::pair<std::string, std::vector<std::int64_t>>> s;
  for (const auto& p : m.named_parameters(true)) s.insert({p.key(), p.value().sizes().vec()});
  return s;
}
std::set<std::pair<std::string, std::vector<std::int64_t>>> keyset(const KeyShapes& k) { return {k.begin(), k.end()}; }

TEST_CASE("CLIP text model: causal, pooled at the first EOS, activation and projection as configured", "[encoders][clip]") {
  CLIPTextModel m(tiny_clip());
  randomise(m, 1);
  torch::NoGradGuard g;
  auto tokens = torch::tensor({{98, 5, 7, 99, 99, 99}, {98, 9, 99, 0, 0, 0}}, torch::kLong);
  const auto a = m->forward(tokens);
  CHECK(a.layers.size() == 3);
  CHECK(a.last_hidden.sizes() == torch::IntArrayRef({2, 6, 32}));
  // Causal: changing token 4 leaves positions 0..3 unchanged.
  auto t2 = tokens.clone();
  t2[0][4] = 11;
  const auto b = m->forward(t2);
  CHECK(torch::equal(a.last_hidden[0].narrow(0, 0, 4), b.last_hidden[0].narrow(0, 0, 4)));
  CHECK(!torch::allclose(a.last_hidden[0][4], b.last_hidden[0][4]));
  // Pooled = final-LN state at the first EOS (99, the largest id).
  CHECK(torch::equal(a.pooled[0], a.last_hidden[0][3]));
  CHECK(torch::equal(a.pooled[1], a.last_hidden[1][2]));
  CHECK(torch::allclose(a.pooled_projected, torch::matmul(a.pooled, m->text_projection->weight.t()), 1e-5, 1e-6));
  // The penultimate output has no final LayerNorm; the last one does.
  CHECK(torch::allclose(a.last_hidden, m->final_layer_norm(a.layers[2])));
  CHECK(!torch::allclose(a.penultimate(), m->final_layer_norm(a.penultimate())));
  // quick-GELU and GELU differ (a wrong activation would pass unnoticed otherwise).
  CLIPTextModel g2(tiny_clip("gelu"));
  {
    auto src = m->named_parameters(true);
    for (auto& p : g2->named_parameters(true)) p.value().copy_(src[p.key()]);
  }
  CHECK(!torch::allclose(g2->forward(tokens).last_hidden, a.last_hidden, 1e-4, 1e-4));
  CHECK_THROWS_WITH(m->forward(torch::tensor({{1, 100}}, torch::kLong)), Contains("outside 0..99"));
  CHECK_THROWS_WITH(m->forward(torch::zeros({1, 17}, torch::kLong)), Contains("length <= 16"));
}

TEST_CASE("T5 relative-position buckets: exact near, logarithmic far, one half per direction", "[encoders][t5]") {
  const auto rel = torch::tensor({0, 1, -1, 7, -7, 8, 12, 16, 127, 128, 500, -500}, torch::kLong);
  const auto b = t5_relative_buckets(rel, 32, 128);
  // Keys after the query use buckets 16..31; exact up to 7; 8 -> 8; log scale reaches 15 at 128.
  const std::vector<std::int64_t> want{0, 17, 1, 23, 7, 24, 25, 26, 31, 31, 31, 15};
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(b[static_cast<std::int64_t>(i)].item<std::int64_t>() == want[i]);
}

TEST_CASE("T5 encoder: no attention scaling, shared bias, RMS norm without mean subtraction", "[encoders][t5]") {
  T5Encoder m(tiny_t5());
  randomise(m, 2);
  torch::NoGradGuard g;
  const auto tokens = torch::tensor({{5, 6, 7, 1, 0, 0}}, torch::kLong);
  const auto out = m->forward(tokens);
  CHECK(out.layers.size() == 3);
  CHECK(out.position_bias.sizes() == torch::IntArrayRef({1, 4, 6, 6}));
  // Block 0 by hand: unscaled scores plus the bias, gated-GELU(tanh) feed-forward.
  auto blk = m->blocks[0]->as<T5Block>();
  auto x = m->embed_tokens(tokens);
  auto rms = [](const torch::Tensor& v, const torch::Tensor& w) { return w * (v * torch::rsqrt(v.pow(2).mean(-1, true) + 1e-6)); };
  auto h = rms(x, blk->norm1->weight);
  auto split = [](const torch::Tensor& t) { return t.view({1, 6, 4, 8}).transpose(1, 2); };
  auto q = split(blk->attention->q(h)), k = split(blk->attention->k(h)), v = split(blk->attention->v(h));
  auto att = torch::matmul((torch::matmul(q, k.transpose(-1, -2)) + out.position_bias).softmax(-1), v);
  x = x + blk->attention->o(att.transpose(1, 2).reshape({1, 6, 32}));
  auto h2 = rms(x, blk->norm2->weight);
  auto ff = blk->feed_forward;
  x = x + ff->wo(torch::gelu(ff->wi_0(h2), "tanh") * ff->wi_1(h2));
  CHECK(torch::allclose(out.layers[0], x, 1e-5, 1e-5));
  CHECK(torch::allclose(out.last_hidden, rms(out.layers[2], m->final_layer_norm->weight), 1e-5, 1e-6));
  // Only block 0 holds the bias table.
  CHECK(m->blocks[1]->as<T5Block>()->attention->relative_attention_bias.is_empty());
}

TEST_CASE("key lists equal the modules' parameters; presets have the released models' sizes", "[encoders][keys]") {
  for (const auto& c : {tiny_clip(), CLIPTextConfig{100, 16, 32, 2, 4, 64, "gelu", false, 1e-5}}) {
    CLIPTextModel m(c);
    CHECK(keyset(*m) == keyset(clip_keys(c)));
  }
  T5Encoder t(tiny_t5());
  CHECK(keyset(*t) == keyset(t5_keys(tiny_t5())));
  // Sizes of the released encoders (counted from the key lists, nothing allocated): CLIP-L's text
  // model is 123.06M parameters (+0.59M projection), bigG's 694.66M with its projection, T5-XXL's
  // encoder 4.762B (its fp16 file, which stores the tied embedding twice, is 9.79 GB).
  auto l = clip_l_config();
  l.projection = false;
  CHECK(parameter_count(clip_keys(l)) == 123060480);
  CHECK(parameter_count(clip_keys(clip_l_config())) == 123060480 + 768 * 768);
  CHECK(parameter_count(clip_keys(clip_g_config())) == 694659840);
  CHECK(parameter_count(t5_keys(t5_xxl_config())) == 4762310656);
  // Names and shapes as SD3_FACTS (c) lists them for the released files.
  auto has = [](const KeyShapes& keys, const std::string& name, std::vector<std::int64_t> shape) {
    return std::find(keys.begin(), keys.end(), std::pair<std::string, std::vector<std::int64_t>>{name, shape}) != keys.end();
  };
  const auto kl = clip_keys(clip_l_config()), kg = clip_keys(clip_g_config()), kt = t5_keys(t5_xxl_config());
  CHECK(has(kl, "text_model.embeddings.token_embedding.weight", {49408, 768}));
  CHECK(has(kl, "text_model.embeddings.position_embedding.weight", {77, 768}));
  CHECK(has(kl, "text_model.encoder.layers.11.mlp.fc1.weight", {3072, 768}));
  CHECK(has(kl, "text_projection.weight", {768, 768}));
  CHECK(!has(kl, "text_model.encoder.layers.12.mlp.fc1.weight", {3072, 768}));
  CHECK(has(kg, "text_model.encoder.layers.31.self_attn.q_proj.weight", {1280, 1280}));
  CHECK(has(kg, "text_model.encoder.layers.31.mlp.fc2.weight", {1280, 5120}));
  CHECK(has(kg, "text_projection.weight", {1280, 1280}));
  CHECK(has(kt, "encoder.embed_tokens.weight", {32128, 4096}));
  CHECK(has(kt, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", {32, 64}));
  CHECK(!has(kt, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight", {32, 64}));
  CHECK(has(kt, "encoder.block.23.layer.0.SelfAttention.q.weight", {4096, 4096}));
  CHECK(has(kt, "encoder.block.23.layer.1.DenseReluDense.wi_1.weight", {10240, 4096}));
  CHECK(has(kt, "encoder.block.23.layer.1.DenseReluDense.wo.weight", {4096, 10240}));
  CHECK(has(kt, "encoder.final_layer_norm.weight", {4096}));
  CHECK(kl.size() == 2 + 12 * 16 + 2 + 1);
  CHECK(kt.size() == 1 + 24 * 9 + 1 + 1);
}

TEST_CASE("text encoder loading: prefixes, detection, tied embeddings, and every problem named", "[encoders][load]") {
  test::TempDir dir;
  CLIPTextModel m(tiny_clip());
  randomise(m, 3);
  std::vector<std::pair<std::string, torch::Tensor>> w;
  for (const auto& p : m->named_parameters(true)) w.emplace_back("text_encoders.clip_g.transformer." + p.key(), p.value());
  io::save_safetensors(dir / "all.safetensors", w);
  {
    io::SafetensorsFile f((dir / "all.safetensors").string());
    auto cfg = detect_clip_config(f.header(), "text_encoders.clip_g.transformer.", f.path());
    CHECK(cfg.width == 32);
    CHECK(cfg.layers == 3);
    CHECK(cfg.mlp == 64);
    CHECK(cfg.projection);
    auto loaded = load_clip_text_model(f, "text_encoders.clip_g.transformer.", tiny_clip());
    torch::NoGradGuard g;
    const auto tokens = torch::tensor({{98, 3, 99}}, torch::kLong);
    CHECK(torch::equal(loaded->forward(tokens).pooled, m->forward(tokens).pooled));
  }
  // A missing tensor, a wrong shape and a stray one are reported together.
  w.erase(w.begin() + 3);
  w[0].second = torch::zeros({100, 31});
  w.emplace_back("text_encoders.clip_g.transformer.text_model.extra.weight", torch::zeros({2}));
  io::save_safetensors(dir / "bad.safetensors", w);
  io::SafetensorsFile bad((dir / "bad.safetensors").string());
  try {
    load_clip_text_model(bad, "text_encoders.clip_g.transformer.", tiny_clip());
    FAIL("expected an error");
  } catch (const InputError& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Contains("3 problems") && Contains("missing text_encoders.clip_g.transformer.") &&
                        Contains("expected [100, 32], found [100, 31]") && Contains("unexpected") && Contains("extra.weight"));
  }
  // T5 with the embedding stored as shared.weight only.
  T5Encoder t(tiny_t5());
  randomise(t, 4);
  std::vector<std::pair<std::string, torch::Tensor>> tw;
  for (const auto& p : t->named_parameters(true))
    tw.emplace_back(p.key() == "encoder.embed_tokens.weight" ? "shared.weight" : p.key(), p.value());
  io::save_safetensors(dir / "t5.safetensors", tw);
  io::SafetensorsFile tf((dir / "t5.safetensors").string());
  const auto tc = detect_t5_config(tf.header(), "", tf.path());
  CHECK(tc.heads == 4);
  CHECK(tc.d_kv == 8);
  CHECK(tc.d_ff == 48);
  CHECK(tc.layers == 3);
  auto t2 = load_t5_encoder(tf, "");
  torch::NoGradGuard g;
  const auto tokens = torch::tensor({{4, 5, 1}}, torch::kLong);
  CHECK(torch::equal(t2->forward(tokens).last_hidden, t->forward(tokens).last_hidden));
  CHECK_THROWS_WITH(detect_clip_config(tf.header(), "", tf.path()), Contains("no CLIP text model"));
}

#ifdef DIFFUSE_TESTDATA_DIR
double rel_err(const torch::Tensor& ours, const torch::Tensor& ref) {
  const double scale = std::max(1.0, ref.abs().max().item<double>());
  return (ours.to(torch::kFloat64) - ref.to(torch::kFloat64)).abs().max().item<double>() / scale;
}

nlohmann::json case_json(const std::string& name) {
  std::ifstream in(std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/" + name + ".json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

// Reads ../shared/testdata/sd3ref/clip_a.* (quick-GELU) and clip_b.* (GELU).
TEST_CASE("parity: CLIP text model equals the reference for clip_a and clip_b (every stored output)", "[encoders][clip][parity]") {
  for (const std::string name : {"clip_a", "clip_b"}) {
    INFO(name);
    const std::string dir = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
    io::SafetensorsFile wf(dir + name + ".weights.safetensors");
    auto cfg = detect_clip_config(wf.header(), "", wf.path());
    cfg = clip_config_from_json(case_json(name), cfg);  // heads and activation are not in the shapes
    auto m = load_clip_text_model(wf, "", cfg);
    const auto io = io::load_safetensors(dir + name + ".io.safetensors");
    torch::NoGradGuard g;
    const auto out = m->forward(io["tokens"]);
    const double bound = 2e-5;
    double worst = 0;
    for (const auto& [key, ours] : std::vector<std::pair<std::string, torch::Tensor>>{
             {"last_hidden", out.last_hidden},
             {"penultimate_hidden", out.penultimate()},
             {"penultimate_hidden_ln", m->final_layer_norm(out.penultimate())},
             {"pooled", out.pooled},
             {"pooled_projected", out.pooled_projected}}) {
      const double e = rel_err(ours, io[key]);
      INFO(key << " error " << e);
      CHECK(e <= bound);
      worst = std::max(worst, e);
    }
    CHECK(torch::equal(io["tokens"].argmax(-1), io["eos_index"]));
    WARN(name << ": worst max|ours - ref| / max(1, max|ref|) = " << worst);
  }
}

// Reads ../shared/testdata/sd3ref/t5_a.*.
TEST_CASE("parity: T5 encoder equals the reference for t5_a (every stored output and the buckets)", "[encoders][t5][parity]") {
  const std::string dir = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
  io::SafetensorsFile wf(dir + "t5_a.weights.safetensors");
  const auto cfg = t5_config_from_json(case_json("t5_a"), detect_t5_config(wf.header(), "", wf.path()));
  CHECK(cfg.heads == 4);
  CHECK(cfg.d_kv == 16);
  auto m = load_t5_encoder(wf, "", cfg);
  const auto io = io::load_safetensors(dir + "t5_a.io.safetensors");
  CHECK(torch::equal(t5_relative_buckets(io["relative_position"], 32, 128), io["relative_buckets"]));
  torch::NoGradGuard g;
  const auto out = m->forward(io["tokens"]);
  const auto lng = m->forward(io["long_tokens"]);
  double worst = 0;
  for (const auto& [key, ours] : std::vector<std::pair<std::string, torch::Tensor>>{
           {"last_hidden", out.last_hidden},
           {"hidden_layer1", out.layers[1]},
           {"hidden_layer1_ln", m->final_layer_norm(out.layers[1])},
           {"long_last_hidden", lng.last_hidden},
           {"long_position_bias_row0", lng.position_bias[0].select(1, 0)}}) {
    const double e = rel_err(ours, io[key]);
    INFO(key << " error " << e);
    CHECK(e <= 2e-5);
    worst = std::max(worst, e);
  }
  WARN("t5_a: worst max|ours - ref| / max(1, max|ref|) = " << worst);
}
#endif

}  // namespace t_text_encoders
