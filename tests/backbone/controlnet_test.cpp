// The SD3 ControlNet module (backbone/controlnet.hpp) and its loader: residuals added where the
// reference adds them, the two forms' block wiring, strength, and the released file layout.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "backbone/tiny_controlnet.hpp"
#include "diffuse/backbone/controlnet.hpp"
#include "diffuse/io/controlnet_checkpoint.hpp"
#include "test_util.hpp"

namespace t_controlnet {

using namespace diffuse;
using Catch::Matchers::Contains;

backbone::MMDiTConfig base_config() {
  auto c = backbone::MMDiTConfig::scaling(3);  // hidden 192, 3 heads
  c.adm_in = 128;
  c.context_in = 32;
  c.pos_embed_max_size = 8;
  return c;
}

backbone::MMDiT base_model() {
  backbone::MMDiT m(base_config());
  torch::manual_seed(3);
  torch::NoGradGuard g;
  for (auto& p : m->named_parameters(true))
    if (p.key().find("adaLN") != std::string::npos || p.key().find("final_layer") != std::string::npos) p.value().normal_(0, 0.05);
  m->eval();
  return m;
}

backbone::ControlNetConfig config(backbone::ControlNetForm form, int layers) {
  const auto b = base_config();
  backbone::ControlNetConfig c;
  c.layers = layers;
  c.hidden = b.hidden_size();
  c.heads = b.num_heads();
  c.mlp_hidden = 4 * c.hidden;
  c.form = form;
  c.pooled_in = form == backbone::ControlNetForm::PooledText8B ? b.adm_in : c.hidden;
  c.own_patch_embed = form == backbone::ControlNetForm::EmbeddedText2B;
  c.interval = b.depth / layers;
  return c;
}

struct Inputs {
  torch::Tensor x = torch::randn({2, 16, 8, 12}), t = torch::tensor({700.0f, 250.0f}), y = torch::randn({2, 128}),
                ctx = torch::randn({2, 5, 32}), control = torch::randn({2, 16, 8, 12});
};

TEST_CASE("ControlNet residuals: shapes, zero output maps change nothing, strength scales, where they are added", "[backbone][controlnet]") {
  torch::NoGradGuard g;
  auto base = base_model();
  backbone::ControlNet net(config(backbone::ControlNetForm::PooledText8B, 3), base_config());
  test::randomize_controlnet(net, 5);
  torch::manual_seed(9);
  Inputs in;
  const auto plain = base->forward(in.x, in.t, in.y, in.ctx);
  auto res = net->forward(base, in.x, in.t, in.y, in.control);
  REQUIRE(res.size() == 3);
  for (const auto& r : res) CHECK(r.sizes() == torch::IntArrayRef({2, 24, 192}));  // 4 x 6 patches
  const auto steered = base->forward(in.x, in.t, in.y, in.ctx, {}, nullptr, res);
  CHECK((steered - plain).abs().max().item<double>() > 1e-3);
  // Strength 0: zero residuals, the plain output exactly; strength 2 doubles each residual.
  const auto zero = net->forward(base, in.x, in.t, in.y, in.control, 0.0);
  CHECK(torch::equal(base->forward(in.x, in.t, in.y, in.ctx, {}, nullptr, zero), plain));
  const auto twice = net->forward(base, in.x, in.t, in.y, in.control, 2.0);
  CHECK(torch::allclose(twice[1], 2 * res[1], 1e-5, 1e-6));
  // One residual for 3 joint blocks goes after every block: the same as three equal ones.
  CHECK(torch::allclose(base->forward(in.x, in.t, in.y, in.ctx, {}, nullptr, {res[0]}),
                        base->forward(in.x, in.t, in.y, in.ctx, {}, nullptr, {res[0], res[0], res[0]}), 1e-6, 1e-6));
  // 2 residuals cannot feed 3 blocks by the reference's rule (block 2 would take residual 2).
  CHECK_THROWS_WITH(base->forward(in.x, in.t, in.y, in.ctx, {}, nullptr, {res[0], res[1]}), Contains("cannot feed 3"));
  // A control latent of another shape is an error.
  CHECK_THROWS_WITH(net->forward(base, in.x, in.t, in.y, in.control.narrow(2, 0, 4)), Contains("control latent"));
}

TEST_CASE("ControlNet forms: the 8B blocks run in sequence, the 2B blocks side by side", "[backbone][controlnet]") {
  torch::NoGradGuard g;
  auto base = base_model();
  torch::manual_seed(9);
  Inputs in;
  for (auto form : {backbone::ControlNetForm::PooledText8B, backbone::ControlNetForm::EmbeddedText2B}) {
    backbone::ControlNet net(config(form, 3), base_config());
    test::randomize_controlnet(net, 6);
    const auto before = net->forward(base, in.x, in.t, in.y, in.control);
    // Change block 0: the last residual follows it only when the blocks are chained.
    net->transformer_blocks[0]->as<backbone::StreamBlock>()->mlp->parameters()[0].add_(0.5);
    const auto after = net->forward(base, in.x, in.t, in.y, in.control);
    CHECK_FALSE(torch::allclose(after[0], before[0]));
    const bool chained = form == backbone::ControlNetForm::PooledText8B;
    CHECK(torch::equal(after[2], before[2]) == !chained);
  }
}

TEST_CASE("ControlNet files: the released layout loads; missing and mis-shaped tensors are named", "[backbone][controlnet][io]") {
  test::TempDir dir;
  torch::NoGradGuard g;
  for (auto form : {backbone::ControlNetForm::PooledText8B, backbone::ControlNetForm::EmbeddedText2B}) {
    backbone::ControlNet net(config(form, 3), base_config());
    test::randomize_controlnet(net, 7);
    const auto path = dir / "cn.safetensors";
    test::write_controlnet(path, net, 2);
    io::ControlNetLoadOptions lo;
    lo.dtype = torch::kFloat32;
    auto loaded = io::load_controlnet(path.string(), base_config(), lo);
    CHECK(loaded->config().form == form);
    CHECK(loaded->config().control_type == 2);
    const auto want = net->named_parameters(true);
    const auto got = loaded->named_parameters(true);
    REQUIRE(got.size() == want.size());
    for (const auto& p : want) CHECK(torch::equal(got[p.key()].contiguous(), p.value()));
  }
  // One tensor missing, one of the wrong shape: both named.
  backbone::ControlNet net(config(backbone::ControlNetForm::PooledText8B, 3), base_config());
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  for (const auto& p : net->named_parameters(true)) {
    const auto name = test::released_name(p.key());
    if (name == "transformer_blocks.1.mlp.fc2.bias") continue;
    ts.emplace_back(name, name == "controlnet_blocks.2.bias" ? torch::zeros({7}) : p.value().detach());
  }
  io::save_safetensors(dir / "bad.safetensors", ts);
  CHECK_THROWS_WITH(io::load_controlnet((dir / "bad.safetensors").string(), base_config()),
                    Contains("missing transformer_blocks.1.mlp.fc2.bias") && Contains("shape of controlnet_blocks.2.bias"));
}

}  // namespace t_controlnet
