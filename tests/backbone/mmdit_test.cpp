// MM-DiT structure and checkpoint layouts: the key set equals the reference layout (without
// allocating the large models), diffusers <-> original round trips, and load errors that list
// every problem; recomputed blocks give the same gradients.
#include <catch2/catch.hpp>

#include <fstream>
#include <set>

#include <torch/torch.h>

#include "diffuse/backbone/mmdit.hpp"
#include "diffuse/backbone/mmdit_keys.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"
#include "diffuse/nn/lora.hpp"
#include "test_util.hpp"

namespace t_mmdit {

using namespace diffuse;
using backbone::MMDiTConfig;
using Catch::Matchers::Contains;

MMDiTConfig tiny(bool qk, std::vector<int> x2) {
  MMDiTConfig c = MMDiTConfig::scaling(2);
  c.adm_in = 32;
  c.context_in = 48;
  c.pos_embed_max_size = 8;
  c.qk_norm = qk;
  c.x_self_attn_layers = std::move(x2);
  return c;
}

struct Inputs {
  torch::Tensor x, t, y, context;
};
Inputs inputs(const MMDiTConfig& c, std::int64_t b = 2) {
  torch::manual_seed(5);
  return {torch::randn({b, c.in_channels, 8, 6}), torch::tensor({900.0f, 57.0f}).narrow(0, 0, b),
          torch::randn({b, c.adm_in}), torch::randn({b, 5, c.context_in})};
}

TEST_CASE("a constructed model's state_dict is the reference key set", "[mmdit]") {
  for (const auto& c : {tiny(false, {}), tiny(true, {0}), tiny(true, {0, 1})}) {
    backbone::MMDiT model(c);
    std::map<std::string, std::vector<std::int64_t>> have;
    for (const auto& p : model->named_parameters(true)) have[p.key()] = p.value().sizes().vec();
    for (const auto& b : model->named_buffers(true)) have[b.key()] = b.value().sizes().vec();
    std::map<std::string, std::vector<std::int64_t>> want;
    for (const auto& k : backbone::mmdit_keys(c)) want[k.name] = k.shape;
    CHECK(have == want);
  }
}

TEST_CASE("the released configs have the released sizes (computed without allocating)", "[mmdit]") {
  const auto m = MMDiTConfig::sd3_medium(), m35 = MMDiTConfig::sd35_medium(), l = MMDiTConfig::sd35_large();
  std::map<std::string, std::vector<std::int64_t>> keys;
  for (const auto& k : backbone::mmdit_keys(m)) keys[k.name] = k.shape;
  // SD3_FACTS (b): shapes of the original SD3-medium checkpoint.
  CHECK(keys.at("pos_embed") == std::vector<std::int64_t>{1, 36864, 1536});
  CHECK(keys.at("joint_blocks.0.x_block.adaLN_modulation.1.weight") == std::vector<std::int64_t>{9216, 1536});
  CHECK(keys.at("joint_blocks.23.context_block.adaLN_modulation.1.weight") == std::vector<std::int64_t>{3072, 1536});
  CHECK(keys.count("joint_blocks.23.context_block.mlp.fc1.weight") == 0);
  CHECK(keys.count("joint_blocks.23.context_block.attn.proj.weight") == 0);
  CHECK(keys.at("final_layer.linear.weight") == std::vector<std::int64_t>{64, 1536});
  CHECK(keys.at("y_embedder.mlp.0.weight") == std::vector<std::int64_t>{1536, 2048});
  // Parameter counts: SD3-medium 2.0B, SD3.5-medium 2.5B with its 0.23B position table, SD3.5-large 8.1B.
  // SD3-medium: 2,028,328,000 trainable parameters, plus the 56.6M-entry position table.
  CHECK(backbone::mmdit_parameter_count(m, false) / 1e9 == Approx(2.0283).margin(0.0001));
  CHECK(backbone::mmdit_parameter_count(m) - backbone::mmdit_parameter_count(m, false) == 36864 * 1536);
  CHECK(backbone::mmdit_parameter_count(m35) / 1e9 == Approx(2.47).margin(0.05));
  CHECK((backbone::mmdit_parameter_count(m35) - backbone::mmdit_parameter_count(m35, false)) / 1e9 ==
        Approx(0.2265).margin(0.001));
  CHECK(backbone::mmdit_parameter_count(l) / 1e9 == Approx(8.1).margin(0.1));
  std::size_t attn2 = 0;
  for (const auto& k : backbone::mmdit_keys(m35)) attn2 += k.name.find("attn2.qkv.weight") != std::string::npos;
  CHECK(attn2 == 13);
}

TEST_CASE("diffusers and original layouts round-trip to the same outputs", "[mmdit]") {
  const auto c = tiny(true, {0});
  torch::manual_seed(3);
  backbone::MMDiT model(c);
  {
    torch::NoGradGuard g;  // non-zero modulation so the half swap matters
    for (auto& p : model->parameters()) p.normal_(0, 0.2);
  }
  const auto in = inputs(c);
  const auto ref = model(in.x, in.t, in.y, in.context);
  test::TempDir dir;
  io::save_mmdit(dir / "orig.safetensors", model, io::KeyLayout::Original, "model.diffusion_model.");
  io::save_mmdit(dir / "diff.safetensors", model, io::KeyLayout::Diffusers);
  // Both files carry exactly the model's weights (compared as stored, row-major). The outputs are
  // compared within the MM-DiT float32 parity bound (2e-5 of scale), not bit for bit: loading lays
  // the weights out as the CPU prefers (column-major with AVX-512), and that kernel sums in another
  // order than the in-memory model's; whether the two round alike is the machine's business.
  const auto bound = 2e-5 * std::max(1.0, ref.abs().max().item<double>());
  std::map<std::string, torch::Tensor> want;
  for (const auto& p : model->named_parameters(true)) want[p.key()] = p.value();
  for (const auto& b : model->named_buffers(true)) want[b.key()] = b.value();
  io::MMDiTLoadOptions as_stored;
  as_stored.weight_layout = nn::WeightLayout::RowMajor;
  for (const char* f : {"orig.safetensors", "diff.safetensors"}) {
    INFO(f);
    auto loaded = io::load_mmdit((dir / f).string(), as_stored);
    CHECK(loaded->config().qk_norm);
    CHECK(loaded->config().x_self_attn_layers == std::vector<int>{0});
    std::size_t same = 0, seen = 0;
    for (const auto& p : loaded->named_parameters(true)) {
      INFO(p.key());
      ++seen;
      REQUIRE(want.count(p.key()) == 1);
      const bool equal = torch::equal(p.value(), want.at(p.key()));
      CHECK(equal);
      same += equal;
    }
    CHECK(seen == model->named_parameters(true).size());
    CHECK(same == seen);
    for (const auto& layout : {std::optional<nn::WeightLayout>{nn::WeightLayout::RowMajor}, std::optional<nn::WeightLayout>{}}) {
      io::MMDiTLoadOptions o;
      o.weight_layout = layout;
      const auto out = io::load_mmdit((dir / f).string(), o)(in.x, in.t, in.y, in.context);
      INFO("layout " << (layout ? "row-major" : "the CPU's choice") << ", bound " << bound);
      CHECK((out - ref).abs().max().item<double>() <= bound);
    }
  }
  // The diffusers file stores norm_out as (scale, shift): the reference's halves swapped.
  io::SafetensorsFile diff((dir / "diff.safetensors").string());
  const auto norm_out = io::load_tensor(diff, "norm_out.linear.weight");
  const auto fl = model->final_layer->adaLN_modulation[1]->as<torch::nn::Linear>()->weight;
  CHECK(torch::equal(norm_out.narrow(0, 0, c.hidden_size()), fl.narrow(0, c.hidden_size(), c.hidden_size())));
  CHECK(diff.contains("transformer_blocks.0.attn.to_q.weight"));
  CHECK(diff.contains("transformer_blocks.1.attn.norm_added_k.weight"));
  CHECK_FALSE(diff.contains("transformer_blocks.1.attn.to_add_out.weight"));  // last block is pre-only
  // Unless told, loading lays the Linear weights out column-major for float32 on an AVX-512 CPU
  // (cpu_linear's faster kernel) and keeps them as stored otherwise.
  const auto orig = (dir / "orig.safetensors").string();
  const bool avx512 = diffuse::use_avx512f();  // false under DIFFUSE_CPU_KERNELS=generic
  auto f32 = io::load_mmdit(orig);
  CHECK(nn::is_column_major(f32->final_layer->linear->weight) == avx512);
  CHECK(nn::is_column_major(f32->joint_blocks[0]->as<backbone::JointBlock>()->x_block->mlp->fc1->weight) == avx512);
  io::MMDiTLoadOptions bf16;
  bf16.dtype = torch::kBFloat16;
  CHECK(io::load_mmdit(orig, bf16)->final_layer->linear->weight.is_contiguous());
  io::MMDiTLoadOptions row;
  row.weight_layout = nn::WeightLayout::RowMajor;
  CHECK(io::load_mmdit(orig, row)->final_layer->linear->weight.is_contiguous());
  // Weights in the compute dtype are read into memory unless in_memory is false (views of the
  // file): a model loaded so keeps its weights when the file is rewritten in place afterwards.
  io::MMDiTLoadOptions views = row;
  views.in_memory = false;
  auto viewed = io::load_mmdit(orig, views);
  CHECK((viewed(in.x, in.t, in.y, in.context) - ref).abs().max().item<double>() <= bound);
  auto read = io::load_mmdit(orig, row);
  const auto size = std::filesystem::file_size(orig);
  viewed = nullptr;  // its pages would lie past the end of the file while it is rewritten
  {
    std::ofstream zeros(orig, std::ios::binary | std::ios::trunc);
    zeros << std::string(size, '\0');
  }
  CHECK((read(in.x, in.t, in.y, in.context) - ref).abs().max().item<double>() <= bound);
}

TEST_CASE("loading reports every missing, unexpected and mis-shaped tensor together", "[mmdit]") {
  const auto c = tiny(false, {});
  backbone::MMDiT model(c);
  auto tensors = io::mmdit_tensors(model, io::KeyLayout::Original);
  std::vector<std::pair<std::string, torch::Tensor>> broken;
  for (auto& [name, t] : tensors) {
    if (name == "context_embedder.bias") continue;                                       // missing
    if (name == "final_layer.linear.bias") broken.emplace_back(name, torch::zeros({3}));  // mis-shaped
    else broken.emplace_back(name, t);
  }
  broken.emplace_back("joint_blocks.0.x_block.extra.weight", torch::zeros({1}));  // unexpected
  test::TempDir dir;
  io::save_safetensors(dir / "bad.safetensors", broken);
  CHECK_THROWS_WITH(io::load_mmdit((dir / "bad.safetensors").string()),
                    Contains("3 problems") && Contains("missing context_embedder.bias (expected [128])") &&
                        Contains("shape of final_layer.linear.bias: expected [64], found [3]") &&
                        Contains("unexpected joint_blocks.0.x_block.extra.weight"));
  io::save_safetensors(dir / "none.safetensors", {{"w", torch::zeros({1})}});
  CHECK_THROWS_WITH(io::load_mmdit((dir / "none.safetensors").string()), Contains("no MM-DiT weights"));
}

TEST_CASE("bad inputs are clear errors", "[mmdit]") {
  const auto c = tiny(false, {});
  backbone::MMDiT model(c);
  auto in = inputs(c);
  CHECK_THROWS_WITH(model(in.x.narrow(1, 0, 4), in.t, in.y, in.context), Contains("x must be [B, 16, H, W]"));
  CHECK_THROWS_WITH(model(in.x, in.t, in.y.narrow(1, 0, 3), in.context), Contains("y must be [2, 32]"));
  CHECK_THROWS_WITH(model(torch::randn({2, 16, 7, 6}), in.t, in.y, in.context), Contains("not a multiple of the patch"));
  CHECK_THROWS_WITH(model(torch::randn({2, 16, 18, 6}), in.t, in.y, in.context), Contains("exceeds pos_embed_max_size"));
}

TEST_CASE("skip layers bypass whole blocks, and a trace records every block", "[mmdit]") {
  const auto c = tiny(false, {});
  backbone::MMDiT model(c);
  const auto in = inputs(c);
  backbone::MMDiTTrace trace;
  const auto full = model->forward(in.x, in.t, in.y, in.context, {}, &trace);
  CHECK(trace.block_x.size() == 2);
  CHECK_FALSE(trace.block_context[1].defined());  // the last context block is pre-only
  CHECK(!torch::equal(model->forward(in.x, in.t, in.y, in.context, {0}), full));
}

TEST_CASE("configs round-trip through JSON and are validated", "[mmdit]") {
  const auto c = MMDiTConfig::sd35_medium();
  const auto back = config_from_json<MMDiTConfig>(nlohmann::json::parse(config_to_json(c).dump()));
  CHECK(back.x_self_attn_layers.size() == 13);
  auto bad = c;
  bad.x_self_attn_layers.push_back(30);
  CHECK_THROWS_WITH(bad.validate(), Contains("outside 0..23"));
}

}  // namespace t_mmdit

namespace t_mmdit_recompute {

using namespace diffuse;

// Loss and gradients (all trainable parameters, in order) of one backward through `model`.
std::pair<double, std::vector<torch::Tensor>> loss_and_grads(backbone::MMDiT& model, const t_mmdit::Inputs& in, bool autocast) {
  for (auto& p : model->parameters())
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
  torch::Tensor loss;
  {
    CpuAutocast amp(autocast);
    loss = model->forward(in.x, in.t, in.y, in.context).to(torch::kFloat32).pow(2).mean();
  }
  loss.backward();
  std::vector<torch::Tensor> grads;
  for (auto& p : model->parameters())
    if (p.requires_grad()) grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return {loss.item<double>(), grads};
}

TEST_CASE("recomputed joint blocks give the kept-activation loss and gradients: full training, LoRA, bf16 autocast",
          "[mmdit][recompute]") {
  auto c = t_mmdit::tiny(true, {1});  // QK-norm and one MMDiT-X block
  c.depth = 3;
  torch::manual_seed(3);
  backbone::MMDiT model(c);
  {
    torch::NoGradGuard g;
    for (auto& p : model->parameters()) p.normal_(0, 0.05);  // adaLN-Zero's zeros would hide the blocks
  }
  const auto in = t_mmdit::inputs(c);
  auto compare = [&](bool autocast) {
    model->recompute_every = 0;
    const auto [loss0, g0] = loss_and_grads(model, in, autocast);
    for (int every : {1, 2}) {
      model->recompute_every = every;
      const auto [loss, g] = loss_and_grads(model, in, autocast);
      INFO("recompute_every " << every << ", autocast " << autocast);
      CHECK(loss == loss0);  // the forward is the same arithmetic
      REQUIRE(g.size() == g0.size());
      double worst = 0;
      for (std::size_t i = 0; i < g.size(); ++i)
        worst = std::max(worst, ((g[i] - g0[i]).abs().max() / (g0[i].abs().max() + 1e-12)).item<double>());
      // bf16 autocast: gradients summed over several uses (the conditioning vector feeds every
      // block) are added in another order, in bf16; float32: the same to rounding.
      CHECK(worst < (autocast ? 3e-2 : 1e-5));
    }
    model->recompute_every = 0;
    return g0;
  };
  const auto full = compare(false);
  CHECK(full.front().abs().max().item<double>() > 0);
  compare(true);  // the recomputation runs under autocast too: the same loss

  // LoRA: frozen inputs and base, adapters inside the blocks only.
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  const auto adapters = nn::add_lora_adapters(*model, {"attention"}, 4, 4);
  {
    torch::NoGradGuard g;
    for (const auto& [name, a] : adapters) a->up.normal_(0, 0.05);
  }
  const auto lora = compare(false);
  CHECK(lora.size() == 2 * adapters.size());
  CHECK(lora.front().abs().max().item<double>() > 0);
}

}  // namespace t_mmdit_recompute
