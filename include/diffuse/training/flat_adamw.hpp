#pragma once
// AdamW (Loshchilov & Hutter 2019, "Decoupled weight decay regularization", Algorithm 2) over one
// flat buffer, with gradient-norm clipping and an EMA of the weights on the same buffer.
//
// Why: a small model has ~100 parameter tensors, and LibTorch 1.13's torch::optim::AdamW runs
// about a dozen operators per tensor per step, clip_grad_norm_ and an EMA another five: ~2000
// operator calls that took ~15% of the shapes model's training step (docs/experiments/training_log.md). Here the
// parameters (and their gradients, and the EMA copy) are views into one float32 buffer each, with
// the same arithmetic as torch::optim::AdamW (tests/training/flat_adamw_test.cpp compares them
// step by step). On the CPU the whole step (clip scale, moments, bias-corrected update, EMA,
// zeroing the gradient for the next backward) is one pass over the five buffers instead of ~12
// operator passes (~5 ms of the shapes model's ~120 ms bf16 step; docs/experiments/training_log.md); other
// devices run it as operators.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/types.h>

#include "diffuse/core/error.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/nn/cpu_lanes.hpp"

namespace diffuse::training {

namespace adamw_detail {

using namespace nn::lanes_detail;

// The step's scalars, as the arithmetic uses them (float, like the buffers).
struct Coefficients {
  float grad_scale;    // clip coefficient (1 when not clipped)
  float keep;          // 1 - lr * weight_decay (decoupled weight decay)
  float beta1, beta2;  // moment decays; their complements below
  float one_minus_beta1, one_minus_beta2;
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
  float eps;
  float step;          // -lr / (1 - beta1^t)
  float ema_decay, ema_mix;  // ema = decay ema + mix p
};

DIFFUSE_LANES_INLINE void step_lanes(vf& p, vf& g, vf& m, vf& v, vf& e, const Coefficients& c, bool ema) {
  g = g * c.grad_scale;
  m = m * c.beta1 + g * c.one_minus_beta1;
  v = v * c.beta2 + (g * g) * c.one_minus_beta2;
  vf denom = v;
  sqrt_in_place(denom);
  denom = denom * c.inv_sqrt_bc2 + c.eps;
  p = p * c.keep + c.step * m / denom;
  if (ema) e = e * c.ema_decay + p * c.ema_mix;
  g = vf{};  // the gradient buffer is left zeroed for the next backward
}

// Elements [b, e) of the buffers; the tail goes through the same lanes (a 16-element staging
// copy), so every element gets the same arithmetic whatever the split between threads.
DIFFUSE_CPU_SPAN void step_span(float* p, float* g, float* m, float* v, float* ema, const Coefficients& c,
                                         std::int64_t b, std::int64_t e) {
  vf vp, vg, vm, vv, ve{};
  const bool has_ema = ema != nullptr;
  std::int64_t i = b;
  for (; i + lanes <= e; i += lanes) {
    load(p + i, vp), load(g + i, vg), load(m + i, vm), load(v + i, vv);
    if (has_ema) load(ema + i, ve);
    step_lanes(vp, vg, vm, vv, ve, c, has_ema);
    store(p + i, vp), store(g + i, vg), store(m + i, vm), store(v + i, vv);
    if (has_ema) store(ema + i, ve);
  }
  if (i == e) return;
  const auto n = e - i;
  std::array<std::array<float, lanes>, 5> buf{};
  float* bufs[5] = {p, g, m, v, ema};
  for (int k = 0; k < 5; ++k)
    if (bufs[k]) std::copy(bufs[k] + i, bufs[k] + e, buf[k].data());
  load(buf[0].data(), vp), load(buf[1].data(), vg), load(buf[2].data(), vm), load(buf[3].data(), vv), load(buf[4].data(), ve);
  step_lanes(vp, vg, vm, vv, ve, c, has_ema);
  store(buf[0].data(), vp), store(buf[1].data(), vg), store(buf[2].data(), vm), store(buf[3].data(), vv), store(buf[4].data(), ve);
  for (int k = 0; k < 5; ++k)
    if (bufs[k]) std::copy(buf[k].data(), buf[k].data() + n, bufs[k] + i);
}

}  // namespace adamw_detail

struct AdamWSettings {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;  // torch's defaults
};

// Moves the data of every tensor into one contiguous float32 buffer, each tensor becoming a view of
// its slice (same Parameter objects: modules keep working). Returns the buffer.
inline torch::Tensor flatten_into_one(const std::vector<torch::Tensor>& tensors) {
  std::int64_t n = 0;
  for (const auto& t : tensors) {
    if (t.scalar_type() != torch::kFloat32) throw Error("flatten_into_one: parameters must be float32");
    n += t.numel();
  }
  auto flat = torch::empty({n}, tensors.empty() ? torch::TensorOptions() : tensors.front().options().requires_grad(false));
  torch::NoGradGuard g;
  std::int64_t at = 0;
  for (const auto& t : tensors) {
    auto view = flat.narrow(0, at, t.numel()).view(t.sizes());
    view.copy_(t);
    auto mut = t;
    mut.set_data(view);
    at += t.numel();
  }
  return flat;
}

// Gives every parameter a gradient that is a view of one zeroed float32 buffer (AccumulateGrad adds
// into a defined gradient in place, so a backward writes into the buffer). Returns the buffer.
inline torch::Tensor gradients_into_one(const std::vector<torch::Tensor>& params) {
  std::int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  auto flat = torch::zeros({n}, params.empty() ? torch::TensorOptions() : params.front().options().requires_grad(false));
  std::int64_t at = 0;
  for (auto p : params) {
    p.mutable_grad() = flat.narrow(0, at, p.numel()).view(p.sizes());
    at += p.numel();
  }
  return flat;
}

class FlatAdamW {
 public:
  FlatAdamW(std::vector<torch::Tensor> params, AdamWSettings s) : s_(s) {
    flat_ = flatten_into_one(params);
    grad_ = gradients_into_one(params);
    exp_avg_ = torch::zeros_like(flat_);
    exp_avg_sq_ = torch::zeros_like(flat_);
    zeroed_at_version_ = grad_._version();
  }

  // A CPU step leaves the gradients zeroed; nothing to do then, unless a backward has written into
  // them since (it adds in place, which advances the buffer's version counter).
  void zero_grad() {
    if (grad_._version() != zeroed_at_version_) grad_.zero_();
    zeroed_at_version_ = grad_._version();
  }

  // The gradients' global L2 norm; when max_norm > 0 the next step scales them by
  // max_norm / (norm + 1e-6) if that is below 1 (torch::nn::utils::clip_grad_norm_'s rule).
  double clip_grad_norm(double max_norm) {
    const double norm = grad_.norm().item<double>();
    grad_scale_ = 1;
    if (max_norm > 0) {
      const double coef = max_norm / (norm + 1e-6);
      if (coef < 1) grad_scale_ = coef;
    }
    return norm;
  }

  // One AdamW step at rate lr; then, when ema is given (a buffer from flatten_into_one over a
  // module of the same parameter list), ema = decay ema + (1 - decay) params.
  // The gradients are read with clip_grad_norm's scale (1 without a clip call since the last step).
  void step(double lr, torch::Tensor* ema = nullptr, double ema_decay = 0) {
    torch::NoGradGuard g;
    if (ema && (ema->numel() != flat_.numel() || ema->scalar_type() != torch::kFloat32 || !ema->is_contiguous()))
      throw Error("FlatAdamW: the EMA buffer does not match the parameters");
    ++steps_;
    const double bc1 = 1 - std::pow(s_.beta1, static_cast<double>(steps_));
    const double bc2 = 1 - std::pow(s_.beta2, static_cast<double>(steps_));
    const double scale = grad_scale_;
    grad_scale_ = 1;
    if (flat_.device().is_cpu() && (!ema || ema->device().is_cpu())) {
      const adamw_detail::Coefficients c{static_cast<float>(scale), static_cast<float>(1 - lr * s_.weight_decay),
                                         static_cast<float>(s_.beta1), static_cast<float>(s_.beta2),
                                         static_cast<float>(1 - s_.beta1), static_cast<float>(1 - s_.beta2),
                                         static_cast<float>(1 / std::sqrt(bc2)), static_cast<float>(s_.eps),
                                         static_cast<float>(-lr / bc1), static_cast<float>(ema_decay),
                                         static_cast<float>(1 - ema_decay)};
      float *p = flat_.data_ptr<float>(), *gr = grad_.data_ptr<float>(), *m = exp_avg_.data_ptr<float>(),
            *v = exp_avg_sq_.data_ptr<float>(), *e = ema ? ema->data_ptr<float>() : nullptr;
      at::parallel_for(0, flat_.numel(), 16384, [&](std::int64_t b, std::int64_t end) {
        DIFFUSE_CPU_DISPATCH(adamw_detail::step_span(p, gr, m, v, e, c, b, end));
      });
      zeroed_at_version_ = grad_._version();  // the kernel wrote through raw pointers: no version bump
      return;
    }
    // other devices: the same arithmetic as operators
    if (scale != 1) grad_.mul_(scale);
    flat_.mul_(1 - lr * s_.weight_decay);
    exp_avg_.mul_(s_.beta1).add_(grad_, 1 - s_.beta1);
    exp_avg_sq_.mul_(s_.beta2).addcmul_(grad_, grad_, 1 - s_.beta2);
    if (!denom_.defined()) denom_ = torch::empty_like(flat_);
    at::sqrt_out(denom_, exp_avg_sq_);
    denom_.div_(std::sqrt(bc2)).add_(s_.eps);
    flat_.addcdiv_(exp_avg_, denom_, -lr / bc1);
    if (ema) ema->mul_(ema_decay).add_(flat_, 1 - ema_decay);
  }

  std::int64_t steps() const { return steps_; }
  const torch::Tensor& parameters() const { return flat_; }
  const torch::Tensor& gradients() const { return grad_; }

  // The state a checkpoint needs (tensors named for a safetensors file), and its inverse.
  std::vector<std::pair<std::string, torch::Tensor>> state() const {
    return {{"exp_avg", exp_avg_}, {"exp_avg_sq", exp_avg_sq_}, {"step", torch::tensor({steps_}, torch::kInt64)}};
  }
  void load_state(const std::vector<std::pair<std::string, torch::Tensor>>& st, const std::string& where) {
    bool m = false, v = false, k = false;
    torch::NoGradGuard g;
    for (const auto& [name, t] : st) {
      auto check = [&](const torch::Tensor& dst) {
        if (t.numel() != dst.numel())
          throw InputError(where + ": optimizer state '" + name + "' has " + std::to_string(t.numel()) + " values, the model " +
                           std::to_string(dst.numel()));
      };
      if (name == "exp_avg") check(exp_avg_), exp_avg_.copy_(t.reshape({-1})), m = true;
      else if (name == "exp_avg_sq") check(exp_avg_sq_), exp_avg_sq_.copy_(t.reshape({-1})), v = true;
      else if (name == "step") steps_ = t.to(torch::kInt64).item<std::int64_t>(), k = true;
    }
    if (!(m && v && k)) throw InputError(where + ": optimizer state lacks exp_avg, exp_avg_sq or step");
  }

 private:
  AdamWSettings s_;
  torch::Tensor flat_, grad_, exp_avg_, exp_avg_sq_, denom_;
  std::int64_t steps_ = 0;
  double grad_scale_ = 1;             // clip coefficient for the next step
  std::int64_t zeroed_at_version_;    // grad_'s version when it last held zeros
};

// The optimizer state of a checkpoint file (FlatAdamW::state() saved as safetensors), read back.
inline void load_adamw_state(FlatAdamW& opt, const std::filesystem::path& file) {
  io::SafetensorsFile f(file.string());
  std::vector<std::pair<std::string, torch::Tensor>> st;
  for (const char* name : {"exp_avg", "exp_avg_sq", "step"})
    if (f.contains(name)) st.emplace_back(name, io::load_tensor(f, name));
  opt.load_state(st, file.string());
}

}  // namespace diffuse::training
