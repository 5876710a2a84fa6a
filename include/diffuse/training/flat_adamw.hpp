#pragma once
// AdamW (Loshchilov & Hutter 2019, "Decoupled weight decay regularization", Algorithm 2) over one
// flat buffer, with gradient-norm clipping and an EMA of the weights on the same buffer.
//
// Why: a small model has ~100 parameter tensors, and LibTorch 1.13's torch::optim::AdamW runs
// about a dozen operators per tensor per step, clip_grad_norm_ and an EMA another five: ~2000
// operator calls that took ~15% of the shapes model's training step (docs/training.md). Here the
// parameters (and their gradients, and the EMA copy) are views into one float32 buffer each, so a
// step is ten operators over the whole buffer, with the same arithmetic as torch::optim::AdamW
// (tests/training/flat_adamw_test.cpp compares them step by step).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "diffuse/core/error.hpp"

namespace diffuse::training {

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

class FlatAdamW {
 public:
  FlatAdamW(std::vector<torch::Tensor> params, AdamWSettings s) : s_(s) {
    flat_ = flatten_into_one(params);
    grad_ = torch::zeros_like(flat_);
    std::int64_t at = 0;
    for (auto& p : params) {
      // AccumulateGrad adds into a defined gradient in place, so backward writes into grad_.
      p.mutable_grad() = grad_.narrow(0, at, p.numel()).view(p.sizes());
      at += p.numel();
    }
    exp_avg_ = torch::zeros_like(flat_);
    exp_avg_sq_ = torch::zeros_like(flat_);
  }

  void zero_grad() { grad_.zero_(); }

  // The gradients' global L2 norm; when max_norm > 0 they are scaled by max_norm / (norm + 1e-6)
  // if that is below 1 (torch::nn::utils::clip_grad_norm_'s rule).
  double clip_grad_norm(double max_norm) {
    const double norm = grad_.norm().item<double>();
    if (max_norm > 0) {
      const double coef = max_norm / (norm + 1e-6);
      if (coef < 1) grad_.mul_(coef);
    }
    return norm;
  }

  // One AdamW step at rate lr; then, when ema is given (a buffer from flatten_into_one over a
  // module of the same parameter list), ema = decay ema + (1 - decay) params.
  void step(double lr, torch::Tensor* ema = nullptr, double ema_decay = 0) {
    torch::NoGradGuard g;
    ++steps_;
    const double bc1 = 1 - std::pow(s_.beta1, static_cast<double>(steps_));
    const double bc2 = 1 - std::pow(s_.beta2, static_cast<double>(steps_));
    flat_.mul_(1 - lr * s_.weight_decay);
    exp_avg_.mul_(s_.beta1).add_(grad_, 1 - s_.beta1);
    exp_avg_sq_.mul_(s_.beta2).addcmul_(grad_, grad_, 1 - s_.beta2);
    if (!denom_.defined()) denom_ = torch::empty_like(flat_);
    at::sqrt_out(denom_, exp_avg_sq_);
    denom_.div_(std::sqrt(bc2)).add_(s_.eps);
    flat_.addcdiv_(exp_avg_, denom_, -lr / bc1);
    if (ema) {
      if (ema->numel() != flat_.numel()) throw Error("FlatAdamW: the EMA buffer does not match the parameters");
      ema->mul_(ema_decay).add_(flat_, 1 - ema_decay);
    }
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
};

}  // namespace diffuse::training
