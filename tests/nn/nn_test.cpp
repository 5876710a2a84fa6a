// MM-DiT building blocks against hand-computed values on tiny inputs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include <torch/torch.h>

#include "diffuse/nn/attention.hpp"
#include "diffuse/nn/cpu_linear.hpp"
#include "diffuse/nn/linear_weight_layout.hpp"
#include "diffuse/nn/embeddings.hpp"
#include "diffuse/nn/gelu_tanh.hpp"
#include "diffuse/nn/layers.hpp"
#include "diffuse/nn/mlp.hpp"
#include "diffuse/nn/modulated_layer_norm.hpp"
#include "diffuse/nn/modulation.hpp"
#include "diffuse/nn/qkv_rms_norm.hpp"
#include "diffuse/nn/rms_norm.hpp"
#include "diffuse/nn/row_block_attention.hpp"
#include "diffuse/nn/rowwise_linear.hpp"

namespace t_nn {

using namespace diffuse;

TEST_CASE("modulate is x (1 + scale) + shift, broadcast over tokens", "[nn]") {
  const auto x = torch::tensor({1.0, 2.0, 3.0, 4.0}).reshape({1, 2, 2});  // (B=1, L=2, D=2)
  const auto shift = torch::tensor({0.5, -1.0}).reshape({1, 2});
  const auto scale = torch::tensor({1.0, 0.0}).reshape({1, 2});
  const auto y = nn::modulate(x, shift, scale);
  CHECK(torch::allclose(y, torch::tensor({2.5, 1.0, 6.5, 3.0}).reshape({1, 2, 2})));
}

TEST_CASE("LayerNorm without affine uses eps 1e-6", "[nn]") {
  const auto x = torch::tensor({1.0, 3.0}, torch::kFloat64).reshape({1, 2});
  // mean 2, variance 1: (x - 2) / sqrt(1 + 1e-6)
  const auto y = nn::layer_norm_no_affine(x);
  CHECK(y[0][1].item<double>() == Approx(1.0 / std::sqrt(1.0 + 1e-6)).epsilon(1e-12));
}

TEST_CASE("RMSNorm scales by the root mean square and the weight", "[nn]") {
  nn::RMSNorm norm(2);
  torch::NoGradGuard g;
  norm->weight.copy_(torch::tensor({2.0f, 0.5f}));
  const auto y = norm(torch::tensor({3.0f, 4.0f}).reshape({1, 2}));
  const double rms = std::sqrt((9.0 + 16.0) / 2 + 1e-6);
  CHECK(y[0][0].item<float>() == Approx(3.0 / rms * 2.0));
  CHECK(y[0][1].item<float>() == Approx(4.0 / rms * 0.5));
}

TEST_CASE("the MLP uses the tanh approximation of GELU", "[nn]") {
  nn::Mlp mlp(1, 1);
  torch::NoGradGuard g;
  mlp->fc1->weight.fill_(1.0);
  mlp->fc1->bias.fill_(0.0);
  mlp->fc2->weight.fill_(1.0);
  mlp->fc2->bias.fill_(0.0);
  const double x = 1.0;
  const double tanh_gelu = 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  const double exact_gelu = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  const double y = mlp(torch::tensor({x}, torch::kFloat64).reshape({1, 1}).to(torch::kFloat32)).item<float>();
  CHECK(y == Approx(tanh_gelu).epsilon(1e-6));
  CHECK(std::abs(y - exact_gelu) > 1e-4);  // the test can tell the two apart
}

TEST_CASE("the CPU GELU(tanh) kernel equals the formula in value and gradient, f32 and bf16", "[nn][gelu]") {
  // float64 reference of the tanh approximation; sizes that leave a tail after the 16-lane loop,
  // a range past the exp clamp (+-100), and a non-contiguous input
  auto reference = [](const torch::Tensor& x) { return at::gelu(x.to(torch::kFloat64), "tanh"); };
  for (const std::int64_t n : {1, 15, 16, 17, 1000, 40000}) {
    const auto x = torch::randn({n}) * 4;
    const auto y = nn::gelu_tanh(x);
    REQUIRE(y.scalar_type() == torch::kFloat32);
    CHECK((y.to(torch::kFloat64) - reference(x)).abs().max().item<double>() < 1e-6);
  }
  const auto wide = torch::linspace(-100, 100, 20001);
  CHECK((nn::gelu_tanh(wide).to(torch::kFloat64) - reference(wide)).abs().max().item<double>() < 1e-6);
  CHECK(nn::gelu_tanh(torch::tensor({-1e4f}))[0].item<float>() == Approx(0.0).margin(1e-30));
  CHECK(nn::gelu_tanh(torch::tensor({1e30f}))[0].item<float>() == Approx(1e30));  // x^3 overflows: still x
  CHECK(std::isnan(nn::gelu_tanh(torch::tensor({std::numeric_limits<float>::quiet_NaN()}))[0].item<float>()));
  const auto strided = (torch::randn({37, 20}) * 3).t();  // not contiguous
  CHECK((nn::gelu_tanh(strided).to(torch::kFloat64) - reference(strided)).abs().max().item<double>() < 1e-6);

  // gradient against autograd through the float64 formula
  const auto x = torch::randn({3, 333}) * 3, g = torch::randn({3, 333});
  auto x64 = x.to(torch::kFloat64).requires_grad_(true);
  at::gelu(x64, "tanh").backward(g.to(torch::kFloat64));
  auto x32 = x.clone().requires_grad_(true);
  nn::gelu_tanh(x32).backward(g);
  CHECK((x32.grad().to(torch::kFloat64) - x64.grad()).abs().max().item<double>() < 2e-5);

  // bf16 in, bf16 out: within one bf16 rounding of the float32 result
  const auto xb = (torch::randn({4099}) * 3).to(torch::kBFloat16);
  const auto yb = nn::gelu_tanh(xb);
  REQUIRE(yb.scalar_type() == torch::kBFloat16);
  const auto exact = reference(xb);
  CHECK(((yb.to(torch::kFloat64) - exact).abs() / (exact.abs() + 1e-3)).max().item<double>() < 1.0 / 128);
  auto xbg = xb.clone().requires_grad_(true);
  nn::gelu_tanh(xbg).sum().backward();
  REQUIRE(xbg.grad().scalar_type() == torch::kBFloat16);
  auto x64b = xb.to(torch::kFloat64).requires_grad_(true);
  at::gelu(x64b, "tanh").sum().backward();
  CHECK((xbg.grad().to(torch::kFloat64) - x64b.grad()).abs().max().item<double>() < 1.2 * 2.0 / 128);
  // float64 goes to at::gelu unchanged
  const auto d = torch::randn({5}, torch::kFloat64);
  CHECK(torch::equal(nn::gelu_tanh(d), at::gelu(d, "tanh")));
}

TEST_CASE("the lanes' sqrt (Newton from the bit-level estimate) is within 2 ulp of sqrt, and sqrt(0) = 0", "[nn]") {
  using namespace nn::lanes_detail;
  double worst = 0;
  for (double e = -37.5; e <= 37.5; e += 0.01) {  // the normal float range, 7500 x 16 values
    vf x;
    for (int k = 0; k < lanes; ++k) x[k] = static_cast<float>(std::pow(10.0, e) * (1 + k / 17.0));
    vf y = x;
    sqrt_in_place(y);
    for (int k = 0; k < lanes; ++k) {
      const double exact = std::sqrt(static_cast<double>(x[k]));
      worst = std::max(worst, std::abs(y[k] - exact) / exact);
    }
  }
  CHECK(worst < 2 * 1.1920929e-7);  // 2 ulp (2^-23 relative each); measured 1.8e-7
  vf z{};
  sqrt_in_place(z);
  for (int k = 0; k < lanes; ++k) CHECK(z[k] == 0.0f);
}

TEST_CASE("the fused modulated LayerNorm equals modulate(LN(x)) in value and gradients", "[nn][mln]") {
  torch::manual_seed(11);
  for (const std::int64_t d : {32, 20}) {  // 20: not a multiple of 16, the composed path
    const auto x = torch::randn({3, 5, d}) * 2 + 0.5;
    const auto mods = torch::randn({3, 4 * d}).chunk(4, 1);  // strided (B, D) views, as adaLN gives them
    const auto& shift = mods[1];
    const auto& scale = mods[2];
    auto reference = [&](const torch::Tensor& xx, const torch::Tensor& sh, const torch::Tensor& sc) {
      return nn::modulate(at::layer_norm(xx, {d}, {}, {}, 1e-6), sh, sc);
    };
    // float32 against the float64 composition
    const auto y = nn::modulated_layer_norm(x, shift, scale);
    const auto y64 = reference(x.to(torch::kFloat64), shift.to(torch::kFloat64), scale.to(torch::kFloat64));
    CHECK((y.to(torch::kFloat64) - y64).abs().max().item<double>() < 2e-6);
    // gradients of x, shift and scale
    auto x1 = x.clone().requires_grad_(true), s1 = shift.clone().requires_grad_(true), c1 = scale.clone().requires_grad_(true);
    auto x2 = x.to(torch::kFloat64).requires_grad_(true), s2 = shift.to(torch::kFloat64).requires_grad_(true),
         c2 = scale.to(torch::kFloat64).requires_grad_(true);
    const auto g = torch::randn({3, 5, d});
    nn::modulated_layer_norm(x1, s1, c1).backward(g);
    reference(x2, s2, c2).backward(g.to(torch::kFloat64));
    CHECK((x1.grad().to(torch::kFloat64) - x2.grad()).abs().max().item<double>() < 1e-5);
    CHECK((s1.grad().to(torch::kFloat64) - s2.grad()).abs().max().item<double>() < 1e-5);
    CHECK((c1.grad().to(torch::kFloat64) - c2.grad()).abs().max().item<double>() < 1e-5);
    // bf16 activations with bf16 modulation (autocast's dtypes): within bf16 rounding
    const auto xb = x.to(torch::kBFloat16);
    const auto yb = nn::modulated_layer_norm(xb, shift.to(torch::kBFloat16), scale.to(torch::kBFloat16));
    REQUIRE(yb.scalar_type() == torch::kBFloat16);
    const auto yb64 = reference(xb.to(torch::kFloat64), shift.to(torch::kBFloat16).to(torch::kFloat64),
                                scale.to(torch::kBFloat16).to(torch::kFloat64));
    // (the composed path rounds LN(x) and 1 + scale to bf16 before multiplying: a few bf16 steps of the largest value)
    CHECK((yb.to(torch::kFloat64) - yb64).abs().max().item<double>() < 4.0 / 256 * yb64.abs().max().item<double>());
    auto x3 = xb.clone().requires_grad_(true), s3 = shift.to(torch::kBFloat16).requires_grad_(true),
         c3 = scale.to(torch::kBFloat16).requires_grad_(true);
    nn::modulated_layer_norm(x3, s3, c3).backward(g.to(torch::kBFloat16));
    REQUIRE(x3.grad().scalar_type() == torch::kBFloat16);
    REQUIRE(c3.grad().scalar_type() == torch::kBFloat16);
    const auto gscale = c2.grad();
    CHECK(((c3.grad().to(torch::kFloat64) - gscale).abs() / (gscale.abs().max() + 1e-3)).max().item<double>() < 0.05);
  }
}

TEST_CASE("split_qkv_rms_norm equals the per-head RMSNorm composition, forward and backward", "[nn]") {
  torch::manual_seed(11);
  const std::int64_t b = 3, l = 5, heads = 2, hd = 32, d = heads * hd;
  // the composition in float64: split, then x / sqrt(mean(x^2) + eps) * w per head
  auto reference = [&](const torch::Tensor& qkv, const torch::Tensor& wq, const torch::Tensor& wk) {
    const auto p = qkv.view({b, l, 3, heads, hd}).unbind(2);
    auto norm = [](const torch::Tensor& x, const torch::Tensor& w) { return x / torch::sqrt(x.pow(2).mean(-1, true) + 1e-6) * w; };
    return std::vector<torch::Tensor>{norm(p[0], wq).reshape({b, l, d}), norm(p[1], wk).reshape({b, l, d}), p[2].reshape({b, l, d})};
  };
  const auto qkv = torch::randn({b, l, 3 * d}) * 3;
  const auto wq = torch::rand({hd}) + 0.5, wk = torch::rand({hd}) + 0.5;
  REQUIRE(nn::qkv_norm_detail::has_kernel(qkv, heads));  // the fused path is the one tested
  const auto ref = reference(qkv.to(torch::kFloat64), wq.to(torch::kFloat64), wk.to(torch::kFloat64));
  {
    torch::NoGradGuard ng;
    const auto o = nn::split_qkv_rms_norm(qkv, heads, wq, wk);
    CHECK((o.q.to(torch::kFloat64) - ref[0]).abs().max().item<double>() < 2e-6 * 4);
    CHECK((o.k.to(torch::kFloat64) - ref[1]).abs().max().item<double>() < 2e-6 * 4);
    CHECK(torch::equal(o.v, qkv.narrow(2, 2 * d, d)));
  }
  // gradients of qkv and both weights, with a different output gradient for each of q, k, v
  const auto gq = torch::randn({b, l, d}), gk = torch::randn({b, l, d}), gv = torch::randn({b, l, d});
  auto x1 = qkv.clone().requires_grad_(true), q1 = wq.clone().requires_grad_(true), k1 = wk.clone().requires_grad_(true);
  const auto o1 = nn::split_qkv_rms_norm(x1, heads, q1, k1);
  torch::autograd::backward({o1.q, o1.k, o1.v}, {gq, gk, gv});
  auto x2 = qkv.to(torch::kFloat64).requires_grad_(true), q2 = wq.to(torch::kFloat64).requires_grad_(true),
       k2 = wk.to(torch::kFloat64).requires_grad_(true);
  const auto o2 = reference(x2, q2, k2);
  torch::autograd::backward(o2, {gq.to(torch::kFloat64), gk.to(torch::kFloat64), gv.to(torch::kFloat64)});
  CHECK((x1.grad().to(torch::kFloat64) - x2.grad()).abs().max().item<double>() < 1e-5);
  CHECK((q1.grad().to(torch::kFloat64) - q2.grad()).abs().max().item<double>() < 1e-4);
  CHECK((k1.grad().to(torch::kFloat64) - k2.grad()).abs().max().item<double>() < 1e-4);
  // an output without gradient (v unused) counts as zeros
  auto x3 = qkv.clone().requires_grad_(true);
  const auto o3 = nn::split_qkv_rms_norm(x3, heads, wq, wk);
  (o3.q * gq).sum().backward();
  CHECK(x3.grad().narrow(2, d, 2 * d).abs().max().item<double>() == 0.0);
  // bf16 activations (autocast's qkv): within a few bf16 steps; gradients in bf16 too
  const auto xb = qkv.to(torch::kBFloat16);
  const auto refb = reference(xb.to(torch::kFloat64), wq.to(torch::kFloat64), wk.to(torch::kFloat64));
  auto x4 = xb.clone().requires_grad_(true);
  const auto o4 = nn::split_qkv_rms_norm(x4, heads, wq, wk);
  REQUIRE(o4.q.scalar_type() == torch::kBFloat16);
  CHECK((o4.q.to(torch::kFloat64) - refb[0]).abs().max().item<double>() < 2.0 / 256 * refb[0].abs().max().item<double>());
  CHECK((o4.k.to(torch::kFloat64) - refb[1]).abs().max().item<double>() < 2.0 / 256 * refb[1].abs().max().item<double>());
  torch::autograd::backward({o4.q, o4.k, o4.v}, {gq.to(torch::kBFloat16), gk.to(torch::kBFloat16), gv.to(torch::kBFloat16)});
  REQUIRE(x4.grad().scalar_type() == torch::kBFloat16);
  auto x5 = xb.to(torch::kFloat64).requires_grad_(true);
  torch::autograd::backward(reference(x5, wq.to(torch::kFloat64), wk.to(torch::kFloat64)),
                            {gq.to(torch::kBFloat16).to(torch::kFloat64), gk.to(torch::kBFloat16).to(torch::kFloat64),
                             gv.to(torch::kBFloat16).to(torch::kFloat64)});
  CHECK((x4.grad().to(torch::kFloat64) - x5.grad()).abs().max().item<double>() < 4.0 / 256 * x5.grad().abs().max().item<double>());
  // without QK norm: the plain split
  const auto plain = nn::split_qkv_rms_norm(qkv, heads, torch::Tensor(), torch::Tensor());
  CHECK(torch::equal(plain.q, qkv.narrow(2, 0, d)));
  CHECK(torch::equal(plain.k, qkv.narrow(2, d, d)));
}

TEST_CASE("the patch embedding is the stride-p convolution, forward and backward", "[nn]") {
  torch::manual_seed(3);
  nn::PatchEmbed embed(3, 8, 2);
  const auto x = torch::randn({2, 3, 6, 4}, torch::requires_grad());
  const auto y = embed(x);  // (2, 3*2, 8)
  const auto conv = at::conv2d(x, embed->proj->weight, embed->proj->bias, {2, 2}).flatten(2).transpose(1, 2);
  REQUIRE(y.sizes() == conv.sizes());
  CHECK(torch::allclose(y, conv, 1e-5, 1e-6));
  const auto g = torch::randn_like(y);
  const auto grads = torch::autograd::grad({y}, {x, embed->proj->weight}, {g});
  const auto grads_conv = torch::autograd::grad({conv}, {x, embed->proj->weight}, {g});
  CHECK(torch::allclose(grads[0], grads_conv[0], 1e-5, 1e-6));
  CHECK(torch::allclose(grads[1], grads_conv[1], 1e-5, 1e-6));
  CHECK_THROWS_AS(embed(torch::randn({1, 3, 5, 4})), InputError);
}

TEST_CASE("the attention entry point equals softmax(q k^T / sqrt(d)) v", "[nn]") {
  torch::manual_seed(1);
  const auto q = torch::randn({2, 5, 8}), k = torch::randn({2, 7, 8}), v = torch::randn({2, 7, 8});
  const auto a = nn::attention(q, k, v, 2), b = nn::attention_reference(q, k, v, 2);
  CHECK(a.sizes() == torch::IntArrayRef{2, 5, 8});
  CHECK(torch::allclose(a, b, 1e-5, 1e-6));
  // The long-sequence f32 path (per head, blocks of queries) agrees too.
  const auto ql = torch::randn({1, 1100, 8}), kl = torch::randn({1, 1000, 8}), vl = torch::randn({1, 1000, 8});
  CHECK(torch::allclose(nn::attention(ql, kl, vl, 2), nn::attention_reference(ql, kl, vl, 2), 1e-5, 1e-6));
  // With autograd (training) the gradient flows and matches the reference formula's.
  const auto qg = q.clone().requires_grad_(true), qr = q.clone().requires_grad_(true);
  nn::attention(qg, k, v, 2).sum().backward();
  nn::attention_reference(qr, k, v, 2).sum().backward();
  CHECK(torch::allclose(qg.grad(), qr.grad(), 1e-5, 1e-6));
  // Memory handed back by the allocator may hold NaN: the scores must not read it (LibTorch 1.13's
  // small-matrix baddbmm computes beta * C even for beta = 0, so an uninitialised C leaked NaN).
  auto poison_heap = [] {
    std::vector<torch::Tensor> p;
    for (int i = 0; i < 64; ++i) p.push_back(torch::full({2 * 2, 5, 7}, std::numeric_limits<float>::quiet_NaN()));
  };
  for (int round = 0; round < 4; ++round) {
    poison_heap();
    CHECK(torch::allclose(nn::attention(q, k, v, 2), b, 1e-5, 1e-6));
    poison_heap();
    const auto qp = q.clone().requires_grad_(true);
    CHECK(torch::isfinite(nn::attention(qp, k, v, 2)).all().item<bool>());
  }
  // One key: the output is its value, whatever the query.
  const auto one = nn::attention(q, k.narrow(1, 0, 1), v.narrow(1, 0, 1), 2);
  CHECK(torch::allclose(one, v.narrow(1, 0, 1).expand({2, 5, 8})));
}

TEST_CASE("attention's backward (scores recomputed, not kept) equals autograd through the formula", "[nn][attention]") {
  torch::manual_seed(4);
  // grads of q, k, v of sum(w * attention): three shapes, the last long enough that the backward
  // takes its queries in two chunks (2 heads x 3000 keys x 3000 queries > 2^24 probabilities).
  auto grads = [](auto&& f, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& w) {
    auto qg = q.clone().requires_grad_(true), kg = k.clone().requires_grad_(true), vg = v.clone().requires_grad_(true);
    (f(qg, kg, vg) * w).sum().backward();
    return std::vector<torch::Tensor>{qg.grad(), kg.grad(), vg.grad()};
  };
  for (const auto& [b, lq, lk, heads, d] : std::vector<std::array<std::int64_t, 5>>{{2, 5, 7, 2, 4}, {1, 40, 33, 3, 64}, {1, 3000, 3000, 2, 4}}) {
    const auto q = torch::randn({b, lq, heads * d}), k = torch::randn({b, lk, heads * d}), v = torch::randn({b, lk, heads * d});
    const auto w = torch::randn({b, lq, heads * d});
    const auto ours = grads([&](auto& x, auto& y, auto& z) { return nn::attention(x, y, z, heads); }, q, k, v, w);
    const auto ref = grads([&](auto& x, auto& y, auto& z) { return nn::attention_reference(x, y, z, heads); },
                           q.to(torch::kFloat64), k.to(torch::kFloat64), v.to(torch::kFloat64), w.to(torch::kFloat64));
    for (int i = 0; i < 3; ++i) {
      INFO("shape " << lq << "x" << lk << " heads " << heads << ", gradient " << i);
      const double err = (ours[i].to(torch::kFloat64) - ref[i]).abs().max().item<double>();
      CHECK(err <= 1e-4 * (1.0 + ref[i].abs().max().item<double>()));
    }
    // bf16 (training's dtype): within bf16's resolution of the exact gradient
    const auto bf = torch::kBFloat16;
    const auto ob = grads([&](auto& x, auto& y, auto& z) { return nn::attention(x, y, z, heads); }, q.to(bf), k.to(bf), v.to(bf), w.to(bf));
    for (int i = 0; i < 3; ++i) {
      INFO("bf16, shape " << lq << "x" << lk << ", gradient " << i);
      const double rel = (ob[i].to(torch::kFloat64) - ref[i]).norm().item<double>() / ref[i].norm().item<double>();
      CHECK(rel < 0.03);
    }
  }
}

TEST_CASE("the row-block CPU attention (heads of 64) equals softmax(q k^T / 8) v, f32 and bf16", "[nn][attention]") {
  torch::manual_seed(3);
  // Lengths off every block and panel size (8 query rows, 32 keys), two images, three heads.
  for (const auto& [lq, lk] : std::vector<std::pair<int, int>>{{1, 1}, {5, 7}, {13, 33}, {64, 100}, {9, 300}}) {
    const auto q = torch::randn({2, lq, 192}) * 2, k = torch::randn({2, lk, 192}) * 2, v = torch::randn({2, lk, 192});
    REQUIRE(nn::row_block_attention_applies(q, 3));
    const auto ref = nn::attention_reference(q.to(torch::kFloat64), k.to(torch::kFloat64), v.to(torch::kFloat64), 3);
    const auto out = nn::row_block_attention(q, k, v, 3);
    REQUIRE(out.sizes() == q.sizes());
    INFO("lq " << lq << " lk " << lk);
    // the MM-DiT parity bound (issue 4): scores reach ~±20 here, and float32 rounding of q k^T grows with them
    CHECK((out.to(torch::kFloat64) - ref).abs().max().item<double>() < 2e-5 * std::max(1.0, ref.abs().max().item<double>()));
    // bf16 inputs: products accumulate in float32, so the error is the inputs' and the output's
    // rounding (bf16 keeps 8 bits: half an ulp is 7.8e-3 for outputs in [2, 4)), plus, in the
    // AVX512-BF16 kernel, the weights' rounding to bf16 (2^-9 of max|v|). Both kernels where the
    // CPU has the instructions, the widening one otherwise.
    const auto qb = q.to(torch::kBFloat16), kb = k.to(torch::kBFloat16), vb = v.to(torch::kBFloat16);
    const auto refb = nn::attention_reference(qb.to(torch::kFloat64), kb.to(torch::kFloat64), vb.to(torch::kFloat64), 3);
    const auto outb = nn::row_block_attention(qb, kb, vb, 3);
    CHECK(outb.scalar_type() == torch::kBFloat16);
    CHECK((outb.to(torch::kFloat64) - refb).abs().max().item<double>() < 1e-2);
    auto widened = torch::empty_like(qb);
    nn::row_block_detail::run<c10::BFloat16>(qb, kb, vb, widened, 3);
    CHECK((widened.to(torch::kFloat64) - refb).abs().max().item<double>() < 1e-2);
#if DIFFUSE_ROW_BLOCK_AVX512
    if (cpu_has_avx512_bf16()) {
      auto dot = torch::empty_like(qb);
      nn::row_block_detail::run_dot_bf16(qb, kb, vb, dot, 3);
      const double err = (dot.to(torch::kFloat64) - refb).abs().max().item<double>();
      INFO("AVX512-BF16 kernel, max error " << err);
      CHECK(err < 1e-2);
      // Element by element, the two kernels differ by at most their two output roundings (half a
      // bf16 step each, 2^-8 relative) and the dot kernel's weight rounding (2^-9 of sum w |v|),
      // where a wrong weight or a lost key would move an output by far more.
      const auto abs_weighted = nn::attention_reference(qb.to(torch::kFloat64), kb.to(torch::kFloat64),
                                                        vb.to(torch::kFloat64).abs(), 3);
      const auto bound = std::ldexp(1.0, -7) * refb.abs() + std::ldexp(1.0, -9) * abs_weighted + 1e-6;
      CHECK(((dot.to(torch::kFloat64) - widened.to(torch::kFloat64)).abs() <= bound).all().item<bool>());
    }
#endif
  }
  // Strided inputs (views of one packed qkv tensor) give the same result as contiguous copies.
  const auto qkv = torch::randn({1, 20, 3 * 128});
  const auto q = qkv.narrow(2, 0, 128), k = qkv.narrow(2, 128, 128), v = qkv.narrow(2, 256, 128);
  CHECK(torch::allclose(nn::row_block_attention(q, k, v, 2), nn::attention_reference(q, k, v, 2), 1e-5, 1e-6));
  // A NaN in a query poisons that query's row only, as softmax does.
  auto qn = torch::randn({1, 10, 64});
  qn[0][3][5] = std::numeric_limits<float>::quiet_NaN();
  const auto kn = torch::randn({1, 10, 64}), vn = torch::randn({1, 10, 64});
  const auto on = nn::row_block_attention(qn, kn, vn, 1);
  CHECK(torch::isnan(on[0][3]).all().item<bool>());
  CHECK(torch::isfinite(on[0].narrow(0, 4, 6)).all().item<bool>());
  const auto onb = nn::row_block_attention(qn.to(torch::kBFloat16), kn.to(torch::kBFloat16), vn.to(torch::kBFloat16), 1);
  CHECK(torch::isnan(onb[0][3]).all().item<bool>());
  CHECK(torch::isfinite(onb[0].narrow(0, 4, 6)).all().item<bool>());
  // Scores far apart (one key scores 1280, the others 0): its weight is 1, the rest underflow to 0.
  auto kf = torch::zeros({1, 40, 64});
  kf[0][37] = torch::full({64}, 20.0);
  const auto qf = torch::ones({1, 3, 64}) * 8, vals = torch::randn({1, 40, 64});
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    const auto of = nn::row_block_attention(qf.to(dtype), kf.to(dtype), vals.to(dtype), 1).to(torch::kFloat32);
    CHECK(torch::allclose(of, vals.to(dtype).to(torch::kFloat32)[0][37].expand({1, 3, 64})));
  }
  // Heads other than 64 wide, float64 and empty inputs are not its job.
  CHECK_FALSE(nn::row_block_attention_applies(torch::randn({1, 4, 64}), 2));
  CHECK_FALSE(nn::row_block_attention_applies(torch::randn({1, 4, 64}, torch::kFloat64), 1));
}

TEST_CASE("the CPU linear kernel equals x W^T + b for every block and panel remainder", "[nn][linear]") {
  torch::NoGradGuard no_grad;
  torch::manual_seed(11);
  const auto x = torch::randn({4, 20}), w = torch::randn({7, 20});
  // It runs wherever AVX-512 is (the CI machines have it); elsewhere it must say it does not apply.
  const bool avx512 = diffuse::use_avx512f();  // false under DIFFUSE_CPU_KERNELS=generic
  REQUIRE(nn::cpu_linear_applies(x, w) == avx512);
  if (avx512) {
    // Token rows: the few-row path (< 8), panel remainders of 32, two cache blocks of 256; columns:
    // vector remainders of 16 and two slices of 1024; weight rows: block remainders of 12 and two
    // groups of 192.
    for (const std::int64_t m : {1, 3, 8, 31, 33, 300})
      for (const std::int64_t k : {5, 17, 1030})
        for (const std::int64_t n : {1, 13, 24, 200}) {
          const auto xi = torch::randn({m, k}), wi = torch::randn({n, k}), bi = torch::randn({n});
          const auto ref = torch::addmm(bi.to(torch::kFloat64), xi.to(torch::kFloat64), wi.to(torch::kFloat64).t());
          const auto y = nn::cpu_linear(xi, wi, bi);
          INFO("m " << m << " k " << k << " n " << n);
          REQUIRE(y.sizes() == ref.sizes());
          // the MM-DiT parity bound (issue 4), against float64
          CHECK((y.to(torch::kFloat64) - ref).abs().max().item<double>() <
                2e-5 * std::max(1.0, ref.abs().max().item<double>()));
          // the bias is added last, once: the unbiased product plus the bias is the same float sum
          if (m == 33 && n == 13) CHECK(torch::equal(nn::cpu_linear(xi, wi, torch::Tensor()) + bi, y));
        }
    // No bias, and a strided (transposed) input.
    const auto xt = torch::randn({40, 64}).t();  // (64, 40), not contiguous
    const auto w2 = torch::randn({30, 40});
    CHECK(torch::allclose(nn::cpu_linear(xt, w2, torch::Tensor()), torch::mm(xt, w2.t()), 1e-4, 1e-5));
    // A NaN in one token row poisons that row only, in both paths.
    for (const std::int64_t m : {3, 40}) {
      auto xn = torch::randn({m, 50});
      xn[1][7] = std::numeric_limits<float>::quiet_NaN();
      const auto yn = nn::cpu_linear(xn, torch::randn({20, 50}), torch::randn({20}));
      CHECK(torch::isnan(yn[1]).all().item<bool>());
      CHECK(torch::isfinite(yn.narrow(0, 2, m - 2)).all().item<bool>());
      CHECK(torch::isfinite(yn[0]).all().item<bool>());
    }
    // Zero columns: y is the bias.
    CHECK(torch::equal(nn::cpu_linear(torch::zeros({5, 0}), torch::zeros({3, 0}), torch::ones({3})), torch::ones({5, 3})));
  }
  // Called where it does not apply, it is at::linear.
  CHECK(torch::allclose(nn::cpu_linear(x.to(torch::kFloat64), w.to(torch::kFloat64), torch::Tensor()),
                        torch::mm(x, w.t()).to(torch::kFloat64), 1e-5, 1e-5));
  // Not its job: float64, bfloat16 from 8 rows on or with mixed dtypes, products that autograd must see.
  CHECK_FALSE(nn::cpu_linear_applies(x.to(torch::kFloat64), w.to(torch::kFloat64)));
  CHECK_FALSE(nn::cpu_linear_applies(torch::randn({8, 20}).to(torch::kBFloat16), w.to(torch::kBFloat16)));
  CHECK_FALSE(nn::cpu_linear_applies(x.to(torch::kBFloat16), w.to(torch::kBFloat16), torch::zeros({7})));
  CHECK_FALSE(nn::cpu_linear_applies(x, w.to(torch::kBFloat16)));
  {
    torch::AutoGradMode grad(true);
    CHECK_FALSE(nn::cpu_linear_applies(x, w.clone().requires_grad_(true)));
    CHECK(nn::cpu_linear_applies(x, w) == avx512);  // nothing requires a gradient
  }
  CHECK(nn::cpu_linear_applies(x, w.clone().requires_grad_(true)) == avx512);  // no_grad here
}

TEST_CASE("bfloat16 products of fewer than 8 rows read the weight as bfloat16 and sum in float32", "[nn][linear]") {
  torch::NoGradGuard no_grad;
  torch::manual_seed(17);
  const bool avx512 = diffuse::use_avx512f();  // false under DIFFUSE_CPU_KERNELS=generic
  const auto bf16 = [](const torch::Tensor& t) { return t.to(torch::kBFloat16); };
  CHECK(nn::cpu_linear_kernel(bf16(torch::randn({1, 32})), bf16(torch::randn({9, 32})), bf16(torch::randn({9}))) ==
        (avx512 ? nn::CpuLinearKernel::BFloat16FewRows : nn::CpuLinearKernel::None));
  // a transposed (non-contiguous) bf16 weight is at::linear's
  CHECK(nn::cpu_linear_kernel(bf16(torch::randn({1, 32})), bf16(torch::randn({32, 9})).t()) == nn::CpuLinearKernel::None);
  if (!avx512) return;
  // Rows 1..7 (the 4-row passes and their remainders), K a multiple of 16 or not (the weight row's
  // tail), an adaLN-like 1 x 1536 x 9216 product.
  for (const auto& [m, k, n] : std::vector<std::array<std::int64_t, 3>>{
           {1, 1536, 9216}, {1, 33, 70}, {3, 16, 5}, {4, 100, 64}, {5, 7, 3}, {7, 257, 130}}) {
    const auto x = bf16(torch::randn({m, k})), w = bf16(torch::randn({n, k})), b = bf16(torch::randn({n}));
    REQUIRE(nn::cpu_linear_kernel(x, w, b) == nn::CpuLinearKernel::BFloat16FewRows);
    const auto y = nn::cpu_linear(x, w, b);
    INFO("m " << m << " k " << k << " n " << n);
    REQUIRE(y.scalar_type() == torch::kBFloat16);
    REQUIRE(y.sizes() == torch::IntArrayRef({m, n}));
    // the exact product of the bf16 values, rounded once to bf16: within half a bf16 step (2^-8
    // relative) plus the float32 sum's rounding
    const auto exact = torch::addmm(b.to(torch::kFloat64), x.to(torch::kFloat64), w.to(torch::kFloat64).t());
    const auto err = (y.to(torch::kFloat64) - exact).abs();
    const double scale = exact.abs().max().item<double>();
    CHECK((err - exact.abs() * std::ldexp(1.0, -8)).max().item<double>() < 1e-5 * scale);
    // and without a bias
    const auto y0 = nn::cpu_linear(x, w, torch::Tensor());
    const auto exact0 = torch::mm(x.to(torch::kFloat64), w.to(torch::kFloat64).t());
    CHECK(((y0.to(torch::kFloat64) - exact0).abs() - exact0.abs() * std::ldexp(1.0, -8)).max().item<double>() <
          1e-5 * std::max(1.0, exact0.abs().max().item<double>()));
  }
  // A NaN in a row poisons that row only.
  auto xn = torch::randn({3, 40});
  xn[1][5] = std::numeric_limits<float>::quiet_NaN();
  const auto yn = nn::cpu_linear(bf16(xn), bf16(torch::randn({6, 40})), torch::Tensor());
  CHECK(torch::isnan(yn[1]).all().item<bool>());
  CHECK(torch::isfinite(yn[0]).all().item<bool>());
  CHECK(torch::isfinite(yn[2]).all().item<bool>());
}

TEST_CASE("the column-major CPU kernel equals x W^T + b for every block and slice remainder", "[nn][linear]") {
  torch::NoGradGuard no_grad;
  torch::manual_seed(13);
  const bool avx512 = diffuse::use_avx512f();  // false under DIFFUSE_CPU_KERNELS=generic
  const auto column_major = [](const torch::Tensor& w) { return w.t().contiguous().t(); };
  {
    const auto x = torch::randn({4, 20}), w = column_major(torch::randn({64, 20}));
    REQUIRE(nn::is_column_major(w));
    REQUIRE_FALSE(w.is_contiguous());
    CHECK(nn::cpu_linear_kernel(x, w) == (avx512 ? nn::CpuLinearKernel::ColumnMajorWeight : nn::CpuLinearKernel::None));
    // N not a multiple of 64, 512 or more rows, a weight neither row- nor column-major: at::linear
    CHECK(nn::cpu_linear_kernel(x, column_major(torch::randn({48, 20}))) == nn::CpuLinearKernel::None);
    CHECK(nn::cpu_linear_kernel(torch::randn({512, 20}), w) == nn::CpuLinearKernel::None);
    CHECK(nn::cpu_linear_kernel(x, torch::randn({64, 40}).narrow(1, 0, 20)) == nn::CpuLinearKernel::None);
    {
      torch::AutoGradMode grad(true);
      CHECK(nn::cpu_linear_kernel(x, w, torch::zeros({64}).requires_grad_(true)) == nn::CpuLinearKernel::None);
    }
  }
  if (!avx512) return;
  // Token rows: remainders of the 6-row block, two cache blocks of 256, a single row (adaLN);
  // columns: one slice, remainders of the 128-column slice, several slices; features: one panel of
  // 64, groups of 4 panels and a remainder group.
  for (const std::int64_t m : {1, 5, 6, 13, 154, 300, 511})
    for (const std::int64_t k : {2, 17, 129, 700})
      for (const std::int64_t n : {64, 320, 1536}) {
        if (m * k * n > 200'000'000) continue;
        const auto xi = torch::randn({m, k}), wi = torch::randn({n, k}), bi = torch::randn({n});
        const auto ref = torch::addmm(bi.to(torch::kFloat64), xi.to(torch::kFloat64), wi.to(torch::kFloat64).t());
        const auto wc = column_major(wi);
        REQUIRE(nn::cpu_linear_kernel(xi, wc, bi) == nn::CpuLinearKernel::ColumnMajorWeight);
        const auto y = nn::cpu_linear(xi, wc, bi);
        INFO("m " << m << " k " << k << " n " << n);
        REQUIRE(y.sizes() == ref.sizes());
        CHECK((y.to(torch::kFloat64) - ref).abs().max().item<double>() <
              2e-5 * std::max(1.0, ref.abs().max().item<double>()));
        if (m == 13 && k == 129 && n == 320) {
          // no bias: the same product without it
          const auto y0 = nn::cpu_linear(xi, wc, torch::Tensor());
          CHECK(torch::allclose(y0 + bi, y, 1e-5, 1e-5));
          // a NaN in one token row poisons that row only
          auto xn = xi.clone();
          xn[7][100] = std::numeric_limits<float>::quiet_NaN();
          const auto yn = nn::cpu_linear(xn, wc, bi);
          CHECK(torch::isnan(yn[7]).all().item<bool>());
          CHECK(torch::isfinite(yn.narrow(0, 0, 7)).all().item<bool>());
          CHECK(torch::isfinite(yn.narrow(0, 8, m - 8)).all().item<bool>());
        }
      }
  // Zero columns: y is the bias.
  CHECK(torch::equal(nn::cpu_linear(torch::zeros({5, 0}), torch::zeros({0, 64}).t(), torch::ones({64})),
                     torch::ones({5, 64})));
}

TEST_CASE("set_linear_weight_layout moves every Linear weight and changes no result", "[nn][linear]") {
  torch::manual_seed(14);
  torch::nn::Sequential net(torch::nn::Linear(32, 128), torch::nn::GELU(), torch::nn::Linear(128, 64),
                            torch::nn::Linear(64, 10));
  const auto x = torch::randn({9, 32});
  const auto forward = [&] {
    torch::NoGradGuard g;
    auto h = x;
    for (std::size_t i = 0; i < net->size(); ++i) {
      if (auto* lin = net[i]->as<torch::nn::LinearImpl>()) h = nn::rowwise_linear(*lin, h);
      else h = torch::gelu(h);
    }
    return h;
  };
  const auto before = forward();
  std::vector<torch::Tensor> values;
  for (const auto& p : net->parameters()) values.push_back(p.detach().clone());
  nn::set_linear_weight_layout(*net, nn::WeightLayout::ColumnMajor);
  std::size_t moved = 0;
  for (const auto& item : net->named_parameters())
    if (item.key().find("weight") != std::string::npos) {
      INFO(item.key());
      CHECK(nn::is_column_major(item.value()));
      ++moved;
    }
  CHECK(moved == 3);
  const auto params = net->parameters();
  for (std::size_t i = 0; i < params.size(); ++i) CHECK(torch::equal(params[i], values[i]));
  CHECK(torch::allclose(forward(), before, 1e-5, 1e-6));
  // Laid out twice: nothing moves (the same storage).
  const auto* data = net[0]->as<torch::nn::LinearImpl>()->weight.data_ptr<float>();
  nn::set_linear_weight_layout(*net, nn::WeightLayout::ColumnMajor);
  CHECK(net[0]->as<torch::nn::LinearImpl>()->weight.data_ptr<float>() == data);
  // Back to row-major: contiguous again, same values; autograd works on either layout.
  nn::set_linear_weight_layout(*net, nn::WeightLayout::RowMajor);
  for (const auto& p : net->parameters()) CHECK(p.is_contiguous());
  CHECK(torch::equal(net->parameters()[0], values[0]));
  nn::set_linear_weight_layout(*net, nn::WeightLayout::ColumnMajor);
  auto* first = net[0]->as<torch::nn::LinearImpl>();
  const auto loss = first->forward(x).square().sum();
  loss.backward();
  CHECK(first->weight.grad().defined());
  CHECK(torch::allclose(first->weight.grad(), 2 * (first->forward(x).detach()).t().mm(x), 1e-4, 1e-4));
  // A weight of 2 MiB or more goes to memory of its own (huge pages on Linux): same values, and
  // the memory lives as long as the weight, also after the module is gone.
  torch::Tensor kept, values_big;
  {
    torch::nn::Linear big(1024, 640);
    values_big = big->weight.detach().clone();
    nn::set_linear_weight_layout(*big, nn::WeightLayout::ColumnMajor);
    CHECK(nn::is_column_major(big->weight));
    CHECK(torch::equal(big->weight, values_big));
    const auto xb = torch::randn({7, 1024});
    torch::NoGradGuard g;
    CHECK(torch::allclose(nn::rowwise_linear(*big, xb), at::linear(xb, values_big, big->bias), 1e-4, 1e-4));
    kept = big->weight.detach();
  }
  CHECK(torch::equal(kept, values_big));
}

TEST_CASE("rowwise_linear gives Linear's result with and without autograd", "[nn][linear]") {
  torch::manual_seed(12);
  torch::nn::Linear lin(48, 40);
  const auto x = torch::randn({2, 70, 48});
  const auto ref = lin(x);
  {
    torch::NoGradGuard no_grad;
    const auto y = nn::rowwise_linear(lin, x);
    REQUIRE(y.sizes() == ref.sizes());
    CHECK(torch::allclose(y, ref, 1e-5, 1e-5));
  }
  // With autograd the gradient reaches the weight (the torch path).
  nn::rowwise_linear(lin, x).sum().backward();
  REQUIRE(lin->weight.grad().defined());
  CHECK(torch::allclose(lin->weight.grad(), x.reshape({-1, 48}).sum(0).expand({40, 48}), 1e-4, 1e-4));
  // linear_at names a Sequential's Linear and refuses anything else.
  torch::nn::Sequential seq(torch::nn::SiLU(), torch::nn::Linear(4, 6));
  CHECK(nn::linear_at(seq, 1).weight.size(0) == 6);
  CHECK_THROWS_WITH(nn::linear_at(seq, 0), Catch::Contains("not a Linear"));
}

TEST_CASE("the timestep embedding is [cos, sin] of t times 10000^(-k/128)", "[nn]") {
  const auto e = nn::timestep_embedding(torch::tensor({0.0f, 500.0f}), 256);
  REQUIRE(e.sizes() == torch::IntArrayRef{2, 256});
  CHECK(e[0][0].item<float>() == 1.0f);    // cos(0)
  CHECK(e[0][128].item<float>() == 0.0f);  // sin(0)
  const double f5 = std::exp(-std::log(10000.0) * 5 / 128);
  CHECK(e[1][5].item<float>() == Approx(std::cos(500 * f5)).margin(1e-5));
  CHECK(e[1][128 + 5].item<float>() == Approx(std::sin(500 * f5)).margin(1e-5));
}

TEST_CASE("the 2-D sin-cos table encodes the column in its first half", "[nn]") {
  const auto t = nn::sincos_pos_embed_2d(8, 3);  // (1, 9, 8)
  REQUIRE(t.sizes() == torch::IntArrayRef{1, 9, 8});
  // token (row 1, col 2) = index 5: first half from column 2, second half from row 1.
  CHECK(t[0][5][0].item<float>() == Approx(std::sin(2.0)));           // sin(col * 1)
  CHECK(t[0][5][2].item<float>() == Approx(std::cos(2.0)));           // cos(col * 1)
  CHECK(t[0][5][4].item<float>() == Approx(std::sin(1.0)));           // sin(row * 1)
  CHECK(t[0][5][5].item<float>() == Approx(std::sin(1.0 / 100.0)));   // omega_1 = 10000^(-1/2)
}

TEST_CASE("the position table is centre-cropped", "[nn]") {
  const auto table = torch::arange(16 * 2, torch::kFloat32).reshape({1, 16, 2});  // P = 4
  const auto c = nn::crop_pos_embed(table, 2, 3);  // top = 1, left = 0
  REQUIRE(c.sizes() == torch::IntArrayRef{1, 6, 2});
  CHECK(c[0][0][0].item<float>() == 2 * (1 * 4 + 0));
  CHECK(c[0][5][0].item<float>() == 2 * (2 * 4 + 2));
  CHECK_THROWS_AS(nn::crop_pos_embed(table, 5, 1), InputError);
}

TEST_CASE("unpatchify puts channel (py p + px) C + c at pixel (h p + py, w p + px)", "[nn]") {
  const std::int64_t p = 2, c = 3, h = 2, w = 3;
  const auto tokens = torch::arange(h * w * p * p * c, torch::kFloat32).reshape({1, h * w, p * p * c});
  const auto img = nn::unpatchify(tokens, h, w, p, c);
  REQUIRE(img.sizes() == torch::IntArrayRef{1, c, h * p, w * p});
  for (std::int64_t hi = 0; hi < h; ++hi)
    for (std::int64_t wi = 0; wi < w; ++wi)
      for (std::int64_t py = 0; py < p; ++py)
        for (std::int64_t px = 0; px < p; ++px)
          for (std::int64_t ci = 0; ci < c; ++ci)
            CHECK(img[0][ci][hi * p + py][wi * p + px].item<float>() ==
                  tokens[0][hi * w + wi][(py * p + px) * c + ci].item<float>());
}

TEST_CASE("the layer factories are LibTorch's layers; under SkipParameterInit they allocate without drawing", "[nn][layers]") {
  // Outside the scope: the same draws as LibTorch's own constructors.
  torch::manual_seed(3);
  auto ours = nn::linear(5, 4);
  auto conv = nn::conv2d(torch::nn::Conv2dOptions(3, 6, 2).stride(2));
  auto table = nn::embedding(9, 4);
  torch::manual_seed(3);
  torch::nn::Linear theirs(5, 4);
  torch::nn::Conv2d theirs_conv(torch::nn::Conv2dOptions(3, 6, 2).stride(2));
  torch::nn::Embedding theirs_table(9, 4);
  CHECK(torch::equal(ours->weight, theirs->weight));
  CHECK(torch::equal(ours->bias, theirs->bias));
  CHECK(torch::equal(conv->weight, theirs_conv->weight));
  CHECK(torch::equal(table->weight, theirs_table->weight));

  // Inside: full-size parameters and options; of the global generator only the draws of 1-element
  // stand-ins are taken (the full-size draws were the cost).
  torch::manual_seed(5);
  torch::nn::Linear(1, 1);
  torch::nn::Linear(torch::nn::LinearOptions(1, 1).bias(false));
  torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 1, 2).stride(2));
  const auto expected_next = torch::rand({4});
  torch::manual_seed(5);
  torch::nn::Linear l{nullptr}, nb{nullptr};
  torch::nn::Conv2d c{nullptr};
  torch::nn::Embedding e{nullptr};
  {
    const nn::SkipParameterInit skip;
    CHECK(nn::SkipParameterInit::active());
    l = nn::linear(300, 200);
    nb = nn::linear(30, 20, false);
    c = nn::conv2d(torch::nn::Conv2dOptions(16, 64, 2).stride(2));
    e = nn::embedding(1000, 32);
  }
  CHECK_FALSE(nn::SkipParameterInit::active());
  CHECK(torch::equal(torch::rand({4}), expected_next));  // no full-size draw happened
  CHECK(l->weight.sizes() == torch::IntArrayRef({200, 300}));
  CHECK(l->bias.sizes() == torch::IntArrayRef({200}));
  CHECK(l->options.in_features() == 300);
  CHECK(l->options.out_features() == 200);
  CHECK_FALSE(nb->bias.defined());
  CHECK(c->weight.sizes() == torch::IntArrayRef({64, 16, 2, 2}));
  CHECK(c->options.in_channels() == 16);
  CHECK(e->weight.sizes() == torch::IntArrayRef({1000, 32}));
  CHECK(l->parameters().size() == 2);
  CHECK(l->weight.requires_grad());

  // Filled like a loader fills them, they compute as LibTorch's layers.
  torch::NoGradGuard no_grad;
  const auto w = torch::randn({200, 300}), bias = torch::randn({200}), x = torch::randn({3, 300});
  l->weight.set_data(w);
  l->bias.set_data(bias);
  CHECK(torch::allclose(l(x), torch::nn::functional::linear(x, w, bias)));
  const auto cw = torch::randn({64, 16, 2, 2}), cb = torch::randn({64}), img = torch::randn({1, 16, 8, 8});
  c->weight.set_data(cw);
  c->bias.set_data(cb);
  CHECK(c(img).sizes() == torch::IntArrayRef({1, 64, 4, 4}));
  CHECK(torch::allclose(c(img), torch::conv2d(img, cw, cb, 2)));
  e->weight.set_data(torch::randn({1000, 32}));
  CHECK(torch::equal(e(torch::tensor({7})), e->weight.narrow(0, 7, 1)));
}

}  // namespace t_nn
