// LoRA files for the MM-DiT (io/lora_file.hpp): both key layouts, the fused-qkv row blocks, the
// swapped (scale, shift) halves, strength, errors that name the key, `diffuse forward --lora`, and
// parity with the official reference's MM-DiT with a LoRA merged.
#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "diffuse/core/torch_compat.hpp"
#include "diffuse/io/lora_file.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"
#include "diffuse/nn/lora.hpp"
#include "test_util.hpp"

namespace t_lora_file {

using namespace diffuse;
using Catch::Matchers::Contains;
using test::TempDir;

backbone::MMDiTConfig tiny() {
  auto c = backbone::MMDiTConfig::scaling(2);
  c.adm_in = 32;
  c.context_in = 48;
  c.pos_embed_max_size = 8;
  c.qk_norm = true;
  return c;
}

backbone::MMDiT random_model(const backbone::MMDiTConfig& c) {
  torch::manual_seed(3);
  backbone::MMDiT m(c);
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.normal_(0, 0.2);
  return m;
}

std::map<std::string, torch::Tensor> weights_of(backbone::MMDiT& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m->named_parameters(true)) out[p.key()] = p.value().detach().clone();
  return out;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

TEST_CASE("a diffusers-layout LoRA updates the fused qkv row blocks and swaps norm_out's halves", "[lora]") {
  const auto c = tiny();
  const std::int64_t d = c.hidden_size(), r = 2;
  TempDir dir;
  torch::manual_seed(7);
  const auto a_q = torch::randn({r, d}), b_q = torch::randn({d, r});
  const auto a_v = torch::randn({r, d}), b_v = torch::randn({d, r});
  const auto a_n = torch::randn({r, d}), b_n = torch::randn({2 * d, r});
  const auto a_f = torch::randn({r, d}), b_f = torch::randn({c.mlp_hidden(), r});
  io::save_safetensors(dir / "d.safetensors",
                       {{"transformer.transformer_blocks.0.attn.to_q.lora_A.weight", a_q},
                        {"transformer.transformer_blocks.0.attn.to_q.lora_B.weight", b_q},
                        {"transformer.transformer_blocks.1.attn.add_v_proj.lora_A.weight", a_v},
                        {"transformer.transformer_blocks.1.attn.add_v_proj.lora_B.weight", b_v},
                        {"transformer.transformer_blocks.1.attn.add_v_proj.alpha", torch::tensor(8.0)},
                        {"transformer.norm_out.linear.lora_A.weight", a_n},
                        {"transformer.norm_out.linear.lora_B.weight", b_n},
                        {"transformer.transformer_blocks.0.ff.net.0.proj.lora_A.weight", a_f},
                        {"transformer.transformer_blocks.0.ff.net.0.proj.lora_B.weight", b_f}},
                       {{"format", "pt"}});
  auto model = random_model(c);
  const auto before = weights_of(model);
  const auto lora = io::read_lora((dir / "d.safetensors").string(), c);
  CHECK(lora.layout == io::LoraLayout::Diffusers);
  REQUIRE(lora.updates.size() == 4);
  const double s = 0.7;
  io::merge_lora(model, lora, s);
  const auto after = weights_of(model);
  auto delta = [](const torch::Tensor& b, const torch::Tensor& a, double scale) {
    return b.to(torch::kFloat64).matmul(a.to(torch::kFloat64)) * scale;
  };
  // to_q: rows [0, d) of joint_blocks.0.x_block.attn.qkv (no alpha: scale 1); k and v rows untouched.
  const auto& q0 = before.at("joint_blocks.0.x_block.attn.qkv.weight");
  const auto& q1 = after.at("joint_blocks.0.x_block.attn.qkv.weight");
  CHECK(max_diff(q1.narrow(0, 0, d), q0.narrow(0, 0, d).to(torch::kFloat64) + s * delta(b_q, a_q, 1.0)) < 1e-6);
  CHECK(torch::equal(q1.narrow(0, d, 2 * d), q0.narrow(0, d, 2 * d)));
  // add_v_proj with alpha 8, rank 2: scale 4, rows [2d, 3d) of the context stream's qkv.
  const auto& v0 = before.at("joint_blocks.1.context_block.attn.qkv.weight");
  const auto& v1 = after.at("joint_blocks.1.context_block.attn.qkv.weight");
  CHECK(max_diff(v1.narrow(0, 2 * d, d), v0.narrow(0, 2 * d, d).to(torch::kFloat64) + s * delta(b_v, a_v, 4.0)) < 1e-5);
  CHECK(torch::equal(v1.narrow(0, 0, 2 * d), v0.narrow(0, 0, 2 * d)));
  // norm_out: the file's rows are (scale, shift), the reference's (shift, scale).
  const auto dn = delta(b_n, a_n, 1.0);
  const auto& n0 = before.at("final_layer.adaLN_modulation.1.weight");
  const auto& n1 = after.at("final_layer.adaLN_modulation.1.weight");
  CHECK(max_diff(n1.narrow(0, 0, d), n0.narrow(0, 0, d).to(torch::kFloat64) + s * dn.narrow(0, d, d)) < 1e-6);
  CHECK(max_diff(n1.narrow(0, d, d), n0.narrow(0, d, d).to(torch::kFloat64) + s * dn.narrow(0, 0, d)) < 1e-6);
  const auto& f1 = after.at("joint_blocks.0.x_block.mlp.fc1.weight");
  CHECK(max_diff(f1, before.at("joint_blocks.0.x_block.mlp.fc1.weight").to(torch::kFloat64) + s * delta(b_f, a_f, 1.0)) < 1e-6);
  // Nothing else moved.
  std::size_t changed = 0;
  for (const auto& [name, w] : before) changed += !torch::equal(w, after.at(name));
  CHECK(changed == 4);
  // Strength 0 is the base model, bit for bit.
  auto zero = random_model(c);
  io::merge_lora(zero, lora, 0.0);
  for (const auto& [name, w] : weights_of(zero)) CHECK(torch::equal(w, before.at(name)));
}

TEST_CASE("a kohya-layout LoRA updates the reference modules by their flattened names", "[lora]") {
  const auto c = tiny();
  const std::int64_t d = c.hidden_size(), r = 3;
  TempDir dir;
  torch::manual_seed(8);
  const auto down = torch::randn({r, d}), up = torch::randn({3 * d, r});
  const auto down2 = torch::randn({r, d}), up2 = torch::randn({2 * d, r});
  io::save_safetensors(dir / "k.safetensors", {{"lora_unet_joint_blocks_1_x_block_attn_qkv.lora_down.weight", down},
                                               {"lora_unet_joint_blocks_1_x_block_attn_qkv.lora_up.weight", up},
                                               {"lora_unet_joint_blocks_1_x_block_attn_qkv.alpha", torch::tensor(1.5)},
                                               {"lora_unet_final_layer_adaLN_modulation_1.lora_down.weight", down2},
                                               {"lora_unet_final_layer_adaLN_modulation_1.lora_up.weight", up2}});
  auto model = random_model(c);
  const auto before = weights_of(model);
  const auto lora = io::read_lora((dir / "k.safetensors").string(), c);
  CHECK(lora.layout == io::LoraLayout::Kohya);
  io::merge_lora(model, lora, 1.0);
  const auto after = weights_of(model);
  const auto expect = before.at("joint_blocks.1.x_block.attn.qkv.weight").to(torch::kFloat64) +
                      up.to(torch::kFloat64).matmul(down.to(torch::kFloat64)) * (1.5 / r);
  CHECK(max_diff(after.at("joint_blocks.1.x_block.attn.qkv.weight"), expect) < 1e-5);
  // kohya keys are the reference's: no half swap.
  const auto expect2 = before.at("final_layer.adaLN_modulation.1.weight").to(torch::kFloat64) +
                       up2.to(torch::kFloat64).matmul(down2.to(torch::kFloat64));
  CHECK(max_diff(after.at("final_layer.adaLN_modulation.1.weight"), expect2) < 1e-5);
}

// The model's weights after merging `lora` at `strength` into a fresh copy of random_model(c).
std::map<std::string, torch::Tensor> merged(const backbone::MMDiTConfig& c, const io::LoraFile& lora, double strength) {
  auto m = random_model(c);
  io::merge_lora(m, lora, strength);
  return weights_of(m);
}

TEST_CASE("LoRA files are written in either layout and read back to the same merged weights", "[lora]") {
  const auto c = tiny();
  const std::int64_t d = c.hidden_size();
  TempDir dir;
  torch::manual_seed(12);
  // diffusers pieces: q and v of one fused qkv (v with alpha 6), the swapped norm_out, an MLP.
  io::save_safetensors(dir / "d.safetensors", {{"transformer_blocks.0.attn.to_q.lora_A.weight", torch::randn({2, d})},
                                               {"transformer_blocks.0.attn.to_q.lora_B.weight", torch::randn({d, 2})},
                                               {"transformer_blocks.0.attn.to_v.lora_A.weight", torch::randn({3, d})},
                                               {"transformer_blocks.0.attn.to_v.lora_B.weight", torch::randn({d, 3})},
                                               {"transformer_blocks.0.attn.to_v.alpha", torch::tensor(6.0)},
                                               {"norm_out.linear.lora_A.weight", torch::randn({2, d})},
                                               {"norm_out.linear.lora_B.weight", torch::randn({2 * d, 2})},
                                               {"transformer_blocks.1.ff.net.2.lora_A.weight", torch::randn({2, c.mlp_hidden()})},
                                               {"transformer_blocks.1.ff.net.2.lora_B.weight", torch::randn({d, 2})}});
  const auto original = io::read_lora((dir / "d.safetensors").string(), c);
  const auto want = merged(c, original, 0.9);
  auto same = [&](const io::LoraFile& l) {
    const auto got = merged(c, l, 0.9);
    double worst = 0;
    for (const auto& [name, w] : want) worst = std::max(worst, max_diff(got.at(name), w));
    return worst;
  };
  // diffusers -> kohya: q and v become one pair of rank 5 on the fused qkv.
  io::save_lora(dir / "k.safetensors", original, io::LoraLayout::Kohya, c);
  const auto kohya = io::read_lora((dir / "k.safetensors").string(), c);
  CHECK(kohya.layout == io::LoraLayout::Kohya);
  CHECK(kohya.updates.size() == 3);
  const auto qkv = io::load_safetensors((dir / "k.safetensors").string());
  CHECK(qkv["lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight"].sizes() == torch::IntArrayRef({5, d}));
  CHECK(qkv["lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight"].sizes() == torch::IntArrayRef({3 * d, 5}));
  CHECK(same(kohya) < 1e-5);
  // kohya -> diffusers: the fused pair becomes to_q, to_k and to_v (k's rows all zero).
  io::save_lora(dir / "d2.safetensors", kohya, io::LoraLayout::Diffusers, c);
  io::SafetensorsFile d2((dir / "d2.safetensors").string());
  CHECK(d2.contains("transformer.transformer_blocks.0.attn.to_k.lora_B.weight"));
  CHECK(d2.metadata().at("format") == "pt");
  const auto back = io::read_lora((dir / "d2.safetensors").string(), c);
  CHECK(same(back) < 1e-5);
  // diffusers -> diffusers keeps each pair as it was: values, rank and alpha.
  io::save_lora(dir / "d3.safetensors", original, io::LoraLayout::Diffusers, c);
  const auto again = io::load_safetensors((dir / "d3.safetensors").string());
  const auto first = io::load_safetensors((dir / "d.safetensors").string());
  CHECK(torch::equal(again["transformer.transformer_blocks.0.attn.to_v.lora_B.weight"], first["transformer_blocks.0.attn.to_v.lora_B.weight"]));
  CHECK(torch::equal(again["transformer.norm_out.linear.lora_B.weight"], first["norm_out.linear.lora_B.weight"]));
  CHECK(again["transformer.transformer_blocks.0.attn.to_v.alpha"].item<double>() == 6.0);
  CHECK_FALSE(again.contains("transformer.transformer_blocks.0.attn.to_q.alpha"));  // alpha = rank: PEFT's default
  CHECK(same(io::read_lora((dir / "d3.safetensors").string(), c)) == 0);
}

TEST_CASE("LoRA adapters: step 0 is the base model exactly; only the adapters train; merged equals unmerged", "[lora]") {
  const auto c = tiny();
  auto model = random_model(c);
  const auto base = weights_of(model);
  torch::manual_seed(4);
  const auto x = torch::randn({2, c.in_channels, 8, 6}), y = torch::randn({2, c.adm_in}), ctx = torch::randn({2, 5, c.context_in});
  const auto t = torch::tensor({900.0f, 57.0f});
  torch::Tensor ref;
  {
    torch::NoGradGuard g;
    ref = model->forward(x, t, y, ctx);
  }
  const auto adapters = nn::add_lora_adapters(*model, {"attention"}, 4, 8.0);
  // attn.qkv and attn.proj of both streams; the last block's context stream has no proj.
  CHECK(adapters.size() == static_cast<std::size_t>(4 * c.depth - 1));
  for (const auto& [name, a] : adapters) CHECK((name.ends_with("attn.qkv") || name.ends_with("attn.proj")));
  std::size_t trainable = 0;
  for (const auto& p : model->named_parameters(true))
    if (p.value().requires_grad()) {
      ++trainable;
      CHECK((p.key().ends_with(".lora.down") || p.key().ends_with(".lora.up")));
    }
  CHECK(trainable == 2 * adapters.size());
  {
    torch::NoGradGuard g;
    CHECK(torch::equal(model->forward(x, t, y, ctx), ref));  // up starts at zero
  }
  // One step of gradient: only the ups move at first (d/d down = 0 while up = 0).
  model->forward(x, t, y, ctx).square().mean().backward();
  const auto& qkv0 = adapters[0].second;
  CHECK(qkv0->up.grad().abs().max().item<double>() > 0);
  CHECK(qkv0->down.grad().abs().max().item<double>() == 0);
  CHECK_FALSE(model->named_parameters(true)["joint_blocks.0.x_block.attn.qkv.weight"].grad().defined());
  // Non-zero adapters: the unmerged forward, the merged one and the base with the saved file
  // merged all agree within the float32 bound; unmerging restores the base weights.
  {
    torch::NoGradGuard g;
    for (auto& [name, a] : adapters) a->up.normal_(0, 0.05);
  }
  torch::NoGradGuard g;
  const auto unmerged = model->forward(x, t, y, ctx);
  const double bound = 2e-5 * std::max(1.0, unmerged.abs().max().item<double>());
  CHECK(max_diff(unmerged, ref) > 1e-3);
  nn::set_lora_merged(*model, true);
  CHECK(max_diff(model->forward(x, t, y, ctx), unmerged) <= bound);
  nn::set_lora_merged(*model, false);
  for (const auto& [name, w] : weights_of(model))
    if (base.count(name)) CHECK(max_diff(w, base.at(name)) <= 1e-6);
  TempDir dir;
  io::save_lora(dir / "trained.safetensors", io::lora_file_of(*model), io::LoraLayout::Diffusers, c);
  auto fresh = random_model(c);
  io::merge_lora(fresh, io::read_lora((dir / "trained.safetensors").string(), c), 1.0);
  CHECK(max_diff(fresh->forward(x, t, y, ctx), unmerged) <= bound);
  CHECK_THROWS_WITH(nn::add_lora_adapters(*random_model(c), {"no.such.layer"}, 4, 4.0), Contains("no Linear layer matches"));
  CHECK_THROWS_WITH(nn::add_lora_adapters(*model, {"attention"}, 4, 4.0), Contains("has an adapter already"));
  CHECK(nn::lora_targets("joint_blocks.0.x_block.mlp.fc1", {"all-linear"}));
  CHECK(nn::lora_targets("joint_blocks.0.x_block.mlp.fc1", {"mlp.fc1"}));
  CHECK_FALSE(nn::lora_targets("joint_blocks.0.x_block.mlp.fc1", {"lp.fc1"}));
  CHECK_FALSE(nn::lora_targets("joint_blocks.0.x_block.attn2.qkv", {"attention"}));
  CHECK_FALSE(nn::lora_targets("final_layer.linear", {"all-linear"}));
}

TEST_CASE("a LoRA adapter's gradients (its own backward) equal autograd through the formula", "[lora]") {
  torch::manual_seed(9);
  nn::LoraAdapter a(24, 40, 4, 8.0);
  {
    torch::NoGradGuard g;
    a->up.normal_(0, 0.1);
  }
  const auto x = torch::randn({3, 7, 24}), w = torch::randn({3, 7, 40});
  // the formula h = (alpha / r) B A x in float64 with plain autograd
  auto xr = x.to(torch::kFloat64).requires_grad_(true);
  auto ar = a->down.detach().to(torch::kFloat64).requires_grad_(true), br = a->up.detach().to(torch::kFloat64).requires_grad_(true);
  (xr.matmul(ar.t()).matmul(br.t()) * 2.0 * w.to(torch::kFloat64)).sum().backward();
  // float32, bfloat16, and float32 activations under CPU autocast (bf16 products, float32 x grad)
  for (const int mode : {0, 1, 2}) {
    const auto dtype = mode == 1 ? torch::kBFloat16 : torch::kFloat32;
    INFO("mode " << mode << " (0 float32, 1 bfloat16, 2 autocast)");
    a->zero_grad();
    auto xg = x.to(dtype).detach().requires_grad_(true);  // not x itself (to() returns x for float32)
    torch::Tensor out;
    {
      CpuAutocast amp(mode == 2);
      out = a->forward(xg);
    }
    CHECK(out.scalar_type() == (mode == 0 ? torch::kFloat32 : torch::kBFloat16));
    (out.to(dtype) * w.to(dtype)).sum().backward();
    CHECK(a->down.grad().scalar_type() == torch::kFloat32);
    CHECK(xg.grad().scalar_type() == dtype);
    const double tol = mode == 0 ? 1e-5 : 2e-2;
    for (const auto& [got, want] : {std::pair{xg.grad(), xr.grad()}, std::pair{a->down.grad(), ar.grad()}, std::pair{a->up.grad(), br.grad()}})
      CHECK((got.to(torch::kFloat64) - want).norm().item<double>() <= tol * want.norm().item<double>());
  }
  // Without autograd the same term.
  torch::NoGradGuard g;
  CHECK(max_diff(a->forward(x), x.matmul(a->down.t()).matmul(a->up.t()) * 2.0) <= 1e-5);
}

TEST_CASE("a LoRA that does not fit the model is refused with every key named", "[lora]") {
  const auto c = tiny();
  const std::int64_t d = c.hidden_size();
  TempDir dir;
  io::save_safetensors(dir / "bad.safetensors",
                       {{"transformer.transformer_blocks.5.attn.to_q.lora_A.weight", torch::zeros({2, d})},  // no block 5
                        {"transformer.transformer_blocks.5.attn.to_q.lora_B.weight", torch::zeros({d, 2})},
                        {"transformer.transformer_blocks.0.attn.to_k.lora_A.weight", torch::zeros({2, d + 1})},  // wrong in
                        {"transformer.transformer_blocks.0.attn.to_k.lora_B.weight", torch::zeros({d, 2})},
                        {"transformer.transformer_blocks.0.attn.to_v.lora_A.weight", torch::zeros({2, d})},  // no B
                        {"transformer.transformer_blocks.0.attn.extra", torch::zeros({1})}});
  CHECK_THROWS_AS(io::read_lora((dir / "bad.safetensors").string(), c), InputError);
  CHECK_THROWS_WITH(io::read_lora((dir / "bad.safetensors").string(), c),
                    Contains("4 problems") && Contains("transformer.transformer_blocks.5.attn.to_q: matches no Linear layer") &&
                        Contains("transformer.transformer_blocks.0.attn.to_k: down [2, " + std::to_string(d + 1) + "]") &&
                        Contains("transformer.transformer_blocks.0.attn.to_v: has no up") &&
                        Contains("transformer.transformer_blocks.0.attn.extra: not a LoRA tensor"));
  io::save_safetensors(dir / "mixed.safetensors", {{"transformer.transformer_blocks.0.attn.to_q.lora_A.weight", torch::zeros({2, d})},
                                                   {"transformer.transformer_blocks.0.attn.to_q.lora_B.weight", torch::zeros({d, 2})},
                                                   {"lora_unet_joint_blocks_0_x_block_attn_proj.lora_down.weight", torch::zeros({2, d})},
                                                   {"lora_unet_joint_blocks_0_x_block_attn_proj.lora_up.weight", torch::zeros({d, 2})}});
  CHECK_THROWS_WITH(io::read_lora((dir / "mixed.safetensors").string(), c), Contains("mixes the kohya"));
}

TEST_CASE("diffuse forward --lora merges LoRA files at their strengths; bad ones exit 2", "[lora][cli]") {
  const auto c = tiny();
  const std::int64_t d = c.hidden_size();
  TempDir dir;
  auto model = random_model(c);
  io::save_mmdit(dir / "w.safetensors", model, io::KeyLayout::Original);
  torch::manual_seed(9);
  io::save_safetensors(dir / "l.safetensors", {{"transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight", torch::randn({2, d})},
                                               {"transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight", torch::randn({d, 2})}});
  const auto x = torch::randn({1, c.in_channels, 8, 6}), y = torch::randn({1, c.adm_in}), ctx = torch::randn({1, 5, c.context_in});
  const auto t = torch::tensor({500.0f});
  io::save_safetensors(dir / "in.safetensors", {{"x", x}, {"t", t}, {"y", y}, {"context", ctx}});
  const auto base = "forward --weights " + (dir / "w.safetensors").string() + " --inputs " + (dir / "in.safetensors").string();
  auto r = test::run_cli(base + " --lora " + (dir / "l.safetensors").string() + ":0.5 --out " + (dir / "o.safetensors").string());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("merged LoRA") && Contains("strength 0.5"));
  io::merge_lora(model, io::read_lora((dir / "l.safetensors").string(), c), 0.5);
  torch::NoGradGuard g;
  const auto want = model->forward(x, t, y, ctx);
  const auto got = io::load_safetensors((dir / "o.safetensors").string())["out"];
  CHECK(max_diff(got, want) <= 2e-5 * std::max(1.0, want.abs().max().item<double>()));
  // The same file twice at 0.25 each is the file once at 0.5, up to rounding.
  r = test::run_cli(base + " --lora " + (dir / "l.safetensors").string() + ":0.25 --lora " + (dir / "l.safetensors").string() +
                    ":0.25 --out " + (dir / "o2.safetensors").string());
  REQUIRE(r.exit_code == 0);
  CHECK(max_diff(io::load_safetensors((dir / "o2.safetensors").string())["out"], got) <= 2e-5 * std::max(1.0, want.abs().max().item<double>()));
  // A LoRA for another model, a missing file, a bad strength: exit 2 with the reason.
  io::save_safetensors(dir / "big.safetensors", {{"transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight", torch::zeros({2, d + 8})},
                                                 {"transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight", torch::zeros({d, 2})}});
  r = test::run_cli(base + " --lora " + (dir / "big.safetensors").string() + " --out " + (dir / "o3.safetensors").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("transformer.transformer_blocks.0.attn.to_out.0: down [2, " + std::to_string(d + 8) + "]"));
  r = test::run_cli(base + " --lora " + (dir / "none.safetensors").string() + " --out " + (dir / "o3.safetensors").string());
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("none.safetensors"));
  r = test::run_cli(base + " --lora " + (dir / "l.safetensors").string() + ":inf --out " + (dir / "o3.safetensors").string());
  CHECK(r.exit_code == 2);
  CHECK_FALSE(std::filesystem::exists(dir / "o3.safetensors"));
}

#ifdef DIFFUSE_TESTDATA_DIR
TEST_CASE("parity: mmdit_a with the lora_a LoRA merged at 0.8, against the reference", "[lora][parity]") {
  // Reads ../shared/testdata/lora/lora_a.lora.safetensors, lora_a.io.safetensors and
  // sd3ref/mmdit_a.weights.safetensors (see lora/README.md).
  const std::string root = DIFFUSE_TESTDATA_DIR;
  const auto weights = root + "/sd3ref/mmdit_a.weights.safetensors";
  const auto io_file = root + "/lora/lora_a.io.safetensors", lora_file = root + "/lora/lora_a.lora.safetensors";
  const auto ref = io::load_safetensors(io_file);
  TempDir dir;
  for (const char* layout : {"row", "auto"}) {
    INFO("weight layout " << layout);
    const auto r = test::run_cli("forward --weights " + weights + " --inputs " + io_file + " --weight-layout " + layout +
                                 " --lora " + lora_file + ":0.8 --out " + (dir / "out.safetensors").string());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.err, Contains("21 adapters"));  // 42 tensors: 21 down/up pairs
    const auto out = io::load_safetensors((dir / "out.safetensors").string())["out"];
    const auto want = ref["out"];
    const double err = max_diff(out, want) / std::max(1.0, want.abs().max().item<double>());
    INFO("max |ours - out| / max(1, max |out|) = " << err);
    CHECK(err <= 2e-5);
    CHECK(max_diff(out, ref["out_base"]) > 1e-2);  // the LoRA changed the output
  }
}
#endif

}  // namespace t_lora_file
