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

  SECTION("a step leaves the gradients zeroed; zero_grad still clears a backward made after it") {
    flat.zero_grad();
    ours.forward(torch::randn({4, 5})).sum().backward();
    flat.clip_grad_norm(clip);
    flat.step(1e-3);
    CHECK(flat.gradients().abs().max().item<float>() == 0.0f);
    const auto x = torch::randn({4, 5});
    ours.forward(x).sum().backward();  // e.g. a backward that is then thrown away
    flat.zero_grad();
    CHECK(flat.gradients().abs().max().item<float>() == 0.0f);
    ours.forward(x).sum().backward();
    const auto once = flat.gradients().clone();
    flat.zero_grad();
    ours.forward(x).sum().backward();
    CHECK(torch::equal(flat.gradients(), once));
  }
}

TEST_CASE("FlatAdamW's one-pass CPU step equals torch::optim::AdamW on a buffer split between threads", "[training][adamw]") {
  // 120 099 values (120 099 mod 16 = 3: the buffer ends in a staged tail).
  torch::manual_seed(11);
  torch::nn::Linear ref(300, 399), ours(300, 399), ema(300, 399);
  {
    torch::NoGradGuard g;
    for (auto* m : {&ours, &ema}) {
      (*m)->weight.copy_(ref->weight);
      (*m)->bias.copy_(ref->bias);
    }
  }
  torch::optim::AdamW opt(ref->parameters(), torch::optim::AdamWOptions(3e-3).weight_decay(0.01));
  training::FlatAdamW flat(ours->parameters(), training::AdamWSettings{});
  auto ema_flat = training::flatten_into_one(ema->parameters());
  auto ema_ref = ref->weight.detach().clone();
  for (int step = 0; step < 4; ++step) {
    const auto x = torch::randn({8, 300});
    opt.zero_grad();
    ref(x).pow(2).mean().backward();
    const double n_ref = torch::nn::utils::clip_grad_norm_(ref->parameters(), 0.1);
    opt.step();
    {
      torch::NoGradGuard g;
      ema_ref.mul_(0.5).add_(ref->weight, 0.5);
    }
    flat.zero_grad();
    ours(x).pow(2).mean().backward();
    CHECK(flat.clip_grad_norm(0.1) == Approx(n_ref).epsilon(1e-5));
    flat.step(3e-3, &ema_flat, 0.5);
    CHECK(torch::allclose(ours->weight, ref->weight, 1e-5, 1e-6));
    CHECK(torch::allclose(ours->bias, ref->bias, 1e-5, 1e-6));
    CHECK(torch::allclose(ema->weight, ema_ref, 1e-5, 1e-6));
  }
  CHECK_FALSE(torch::allclose(ours->weight, ema->weight));  // the EMA is its own buffer

  // Threads split the buffer anywhere: spans ending off a multiple of 16 give the same bits.
  const std::int64_t n = 1000;
  auto make = [&] { return std::vector<torch::Tensor>{torch::randn({n}), torch::randn({n}), torch::randn({n}), torch::rand({n}), torch::randn({n})}; };
  torch::manual_seed(3);
  auto one = make();
  std::vector<torch::Tensor> split;
  for (auto& t : one) split.push_back(t.clone());
  const training::adamw_detail::Coefficients c{0.5f, 0.99f, 0.9f, 0.999f, 0.1f, 0.001f, 3.0f, 1e-8f, -1e-2f, 0.9f, 0.1f};
  auto run = [&](std::vector<torch::Tensor>& b, std::int64_t from, std::int64_t to) {
    training::adamw_detail::step_span(b[0].data_ptr<float>(), b[1].data_ptr<float>(), b[2].data_ptr<float>(),
                                      b[3].data_ptr<float>(), b[4].data_ptr<float>(), c, from, to);
  };
  run(one, 0, n);
  for (auto [from, to] : {std::pair<std::int64_t, std::int64_t>{0, 7}, {7, 333}, {333, 512}, {512, 1000}}) run(split, from, to);
  for (std::size_t k = 0; k < one.size(); ++k) CHECK(torch::equal(one[k], split[k]));
  CHECK(one[1].abs().max().item<float>() == 0.0f);  // the gradients were zeroed
}

}  // namespace t_flat_adamw
