// FlatAdamW against LibTorch's AdamW + clip_grad_norm_ + a per-tensor EMA, step by step.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "diffuse/training/flat_adamw.hpp"

namespace t_flat_adamw {

using namespace diffuse;

struct Net : torch::nn::Module {
  Net() {
    a = register_module("a", torch::nn::Linear(5, 7));
    b = register_module("b", torch::nn::Linear(7, 3));
    scale = register_parameter("scale", torch::ones({3}));
  }
  torch::Tensor forward(const torch::Tensor& x) { return b(torch::tanh(a(x))) * scale; }
  torch::nn::Linear a{nullptr}, b{nullptr};
  torch::Tensor scale;
};

void copy_weights(Net& dst, Net& src) {
  torch::NoGradGuard g;
  auto d = dst.parameters(), s = src.parameters();
  for (std::size_t i = 0; i < d.size(); ++i) d[i].copy_(s[i]);
}

TEST_CASE("FlatAdamW follows torch::optim::AdamW with clipping, and keeps an EMA", "[training][adamw]") {
  torch::manual_seed(7);
  Net ref, ours, ema;
  copy_weights(ours, ref);
  copy_weights(ema, ref);
  const double wd = 0.05, clip = 0.5, decay = 0.9;
  torch::optim::AdamW opt(ref.parameters(), torch::optim::AdamWOptions(1e-2).weight_decay(wd));
  std::vector<torch::Tensor> ema_ref;
  for (const auto& p : ref.parameters()) ema_ref.push_back(p.detach().clone());
  training::AdamWSettings s;
  s.weight_decay = wd;
  training::FlatAdamW flat(ours.parameters(), s);
  auto ema_flat = training::flatten_into_one(ema.parameters());
  REQUIRE(flat.parameters().numel() == 5 * 7 + 7 + 7 * 3 + 3 + 3);
  // the module's parameters are views of the flat buffer
  CHECK(ours.scale.data_ptr<float>() >= flat.parameters().data_ptr<float>());
  CHECK(ours.scale.data_ptr<float>() < flat.parameters().data_ptr<float>() + flat.parameters().numel());

  int clipped = 0;
  for (int step = 0; step < 12; ++step) {
    const auto x = torch::randn({16, 5}), y = torch::randn({16, 3});
    const double lr = 1e-2 * (1 + step % 3);
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    opt.zero_grad();
    (ref.forward(x) - y).pow(2).mean().mul(step % 4 == 0 ? 40.0 : 1.0).backward();
    const double norm_ref = torch::nn::utils::clip_grad_norm_(ref.parameters(), clip);
    opt.step();
    {
      torch::NoGradGuard g;
      auto p = ref.parameters();
      for (std::size_t i = 0; i < p.size(); ++i) ema_ref[i].mul_(decay).add_(p[i], 1 - decay);
    }

    flat.zero_grad();
    (ours.forward(x) - y).pow(2).mean().mul(step % 4 == 0 ? 40.0 : 1.0).backward();
    // backward accumulated into the flat gradient buffer
    CHECK(flat.gradients().abs().sum().item<double>() > 0);
    const double norm = flat.clip_grad_norm(clip);
    clipped += norm > clip;
    CHECK(norm == Approx(norm_ref).epsilon(1e-5));
    flat.step(lr, &ema_flat, decay);

    auto pr = ref.parameters(), po = ours.parameters(), pe = ema.parameters();
    for (std::size_t i = 0; i < pr.size(); ++i) {
      CHECK(torch::allclose(po[i], pr[i], 1e-5, 1e-6));
      CHECK(torch::allclose(pe[i], ema_ref[i], 1e-5, 1e-6));
    }
  }
  CHECK(clipped >= 3);  // the scaled steps were clipped
  CHECK(flat.steps() == 12);

  SECTION("state round trip: a fresh optimizer with the saved state continues identically") {
    Net other;
    copy_weights(other, ours);
    training::FlatAdamW again(other.parameters(), s);
    again.load_state(flat.state(), "test");
    CHECK(again.steps() == 12);
    const auto x = torch::randn({16, 5});
    for (auto* o : {&flat, &again}) o->zero_grad();
    ours.forward(x).sum().backward();
    other.forward(x).sum().backward();
    flat.step(1e-2);
    again.step(1e-2);
    CHECK(torch::equal(flat.parameters(), again.parameters()));
    auto bad = flat.state();
    bad[0].second = torch::zeros({3});
    CHECK_THROWS_AS(again.load_state(bad, "ckpt"), InputError);
    bad.pop_back();
    CHECK_THROWS_AS(again.load_state({bad[1]}, "ckpt"), InputError);
  }
}

}  // namespace t_flat_adamw
