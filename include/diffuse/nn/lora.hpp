#pragma once
// LoRA adapters on Linear layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
// Models", eq. 3): h = W x + (alpha / r) * strength * B A x, with A = `down` (r, in) and B = `up`
// (out, r). A starts Kaiming-uniform and B at zero (as PEFT does), so a model with fresh adapters
// computes exactly what the base model computes; only A and B (float32) are trained, the base
// weights are frozen in whatever dtype and layout they have.
//
// An adapter is a child module named "lora" of the Linear it adapts, so the model's Linear types
// stay as they are and nn/rowwise_linear.hpp (every Linear of the MM-DiT goes through it) adds the
// adapter's term where one is attached and not merged. Names of the adapter parameters follow the
// module tree: "joint_blocks.0.x_block.attn.qkv.lora.down".
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/grad_mode.h>
#include <torch/autograd.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/core/error.hpp"
#include "diffuse/nn/linear_weight_layout.hpp"

namespace diffuse::nn {

namespace lora_detail {

// scale * (x A^T) B^T with A, B already in x's dtype.
inline torch::Tensor low_rank_term(const torch::Tensor& x, const torch::Tensor& a, const torch::Tensor& b, double scale) {
  return torch::nn::functional::linear(torch::nn::functional::linear(x, a), b) * scale;
}

// The same term with a backward that keeps x (in the products' dtype, as autocast would keep it)
// and x A^T only: autograd through the dtype casts would also keep copies of A and B in that dtype
// (~57 MB for SD3-medium's attention adapters at rank 64, 1.5% of its bf16 weights); here they are
// cast again in the backward from the float32 parameters. The same products in the same dtype as
// autograd's, so the same gradients.
struct LowRankTerm : torch::autograd::Function<LowRankTerm> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                                                const torch::Tensor& down, const torch::Tensor& up, double scale) {
    const auto h = torch::nn::functional::linear(x, down.to(x.scalar_type()));  // bf16 under autocast whatever x is
    ctx->save_for_backward({x.to(h.scalar_type()), h, down, up});  // x as the product read it
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["x_dtype"] = static_cast<std::int64_t>(x.scalar_type());
    return {torch::nn::functional::linear(h, up.to(x.scalar_type())) * scale};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &h = saved[1], &down = saved[2], &up = saved[3];
    const auto dt = h.scalar_type();  // the forward's compute dtype (x's, or autocast's)
    const auto in = x.size(-1), rank = h.size(-1), out = up.size(0);
    const auto g = (grads[0].to(dt) * ctx->saved_data["scale"].toDouble()).reshape({-1, out});
    const auto h2 = h.reshape({-1, rank});
    const auto dh = g.mm(up.to(dt));  // (N, rank)
    torch::Tensor dx, ddown, dup;
    if (ctx->needs_input_grad(2)) dup = g.t().mm(h2).to(up.scalar_type());
    if (ctx->needs_input_grad(1)) ddown = dh.t().mm(x.reshape({-1, in})).to(down.scalar_type());
    if (ctx->needs_input_grad(0))
      dx = dh.mm(down.to(dt)).view(x.sizes()).to(static_cast<torch::ScalarType>(ctx->saved_data["x_dtype"].toInt()));
    return {dx, ddown, dup, torch::Tensor()};
  }
};

}  // namespace lora_detail

class LoraAdapterImpl : public torch::nn::Module {
 public:
  LoraAdapterImpl(std::int64_t in, std::int64_t out, std::int64_t rank, double alpha) : alpha_(alpha) {
    if (rank < 1) throw InputError("LoRA: rank must be at least 1");
    if (!(alpha > 0) || !std::isfinite(alpha)) throw InputError("LoRA: alpha must be positive");
    down = register_parameter("down", torch::empty({rank, in}, torch::kFloat32));
    up = register_parameter("up", torch::zeros({out, rank}, torch::kFloat32));
    torch::NoGradGuard g;
    torch::nn::init::kaiming_uniform_(down, std::sqrt(5.0));  // PEFT's (and nn.Linear's) initialisation of A
  }
  std::int64_t rank() const { return down.size(0); }
  double alpha() const { return alpha_; }
  double strength = 1.0;
  bool merged = false;  // the term is in the base weight (set_lora_merged); forward adds nothing
  double scale() const { return strength * alpha_ / static_cast<double>(rank()); }

  // The adapter's term for x (..., in), in x's dtype.
  torch::Tensor forward(const torch::Tensor& x) {
    if (at::GradMode::is_enabled() && (x.requires_grad() || down.requires_grad() || up.requires_grad()))
      return lora_detail::LowRankTerm::apply(x, down, up, scale())[0];
    return lora_detail::low_rank_term(x, down.to(x.scalar_type()), up.to(x.scalar_type()), scale());
  }
  // scale * up @ down in float64.
  torch::Tensor delta() const { return up.detach().to(torch::kFloat64).matmul(down.detach().to(torch::kFloat64)) * scale(); }

  torch::Tensor down, up;

 private:
  double alpha_;
};
TORCH_MODULE(LoraAdapter);

// The adapter attached to `m`, or null.
inline LoraAdapterImpl* lora_adapter_of(torch::nn::LinearImpl& m) {
  for (const auto& child : m.named_children())
    if (child.key() == "lora") return child.value()->as<LoraAdapterImpl>();
  return nullptr;
}

// Which Linear layers get adapters: "attention" (both streams' attention in and out projections,
// attn.qkv and attn.proj, as diffusers' SD3 LoRA script targets to_q/k/v, to_out and their add_
// twins), "all-linear" (every Linear of the joint blocks: also attn2, the MLPs and the adaLN
// modulation, as kohya's sd-scripts), or module-name suffixes ("mlp.fc1", "x_block.attn.qkv").
inline bool lora_targets(const std::string& module, const std::vector<std::string>& targets) {
  auto ends_with = [&](const std::string& s) {
    return module == s || (module.size() > s.size() && module.ends_with(s) && module[module.size() - s.size() - 1] == '.');
  };
  for (const auto& t : targets) {
    if (t == "attention") {
      if (ends_with("attn.qkv") || ends_with("attn.proj")) return true;
    } else if (t == "all-linear") {
      if (module.starts_with("joint_blocks.")) return true;
    } else if (ends_with(t)) {
      return true;
    }
  }
  return false;
}

// Attaches an adapter of `rank` and `alpha` to every Linear of `model` that `targets` names, and
// freezes everything else: afterwards only the adapters' parameters require gradients. Returns the
// adapted modules' names with their adapters; an empty selection is an error.
inline std::vector<std::pair<std::string, LoraAdapter>> add_lora_adapters(torch::nn::Module& model,
                                                                          const std::vector<std::string>& targets,
                                                                          std::int64_t rank, double alpha) {
  std::vector<std::pair<std::string, LoraAdapter>> added;
  for (auto& p : model.parameters()) p.set_requires_grad(false);
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* linear = item.value()->as<torch::nn::LinearImpl>();
    if (!linear || !lora_targets(item.key(), targets)) continue;
    if (lora_adapter_of(*linear)) throw InputError("LoRA: " + item.key() + " has an adapter already");
    LoraAdapter a(linear->weight.size(1), linear->weight.size(0), rank, alpha);
    a->to(linear->weight.device());
    linear->register_module("lora", a);
    added.emplace_back(item.key(), a);
  }
  if (added.empty()) throw InputError("LoRA: no Linear layer matches the targets");
  return added;
}

// Every adapter of `model`, by the name of the Linear it adapts.
inline std::vector<std::pair<std::string, LoraAdapter>> lora_adapters(torch::nn::Module& model) {
  std::vector<std::pair<std::string, LoraAdapter>> out;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* linear = item.value()->as<torch::nn::LinearImpl>();
    if (!linear) continue;
    for (const auto& child : linear->named_children())
      if (child.key() == "lora")
        out.emplace_back(item.key(), LoraAdapter(std::dynamic_pointer_cast<LoraAdapterImpl>(child.value())));
  }
  return out;
}

// Adds (merge) or subtracts (unmerge) each adapter's term to or from its base weight, in float64,
// stored in the weight's dtype and memory layout. Unmerging restores the weight up to that
// rounding (one float32 rounding of W + delta, another of the difference).
inline void set_lora_merged(torch::nn::Module& model, bool merge) {
  torch::NoGradGuard g;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto* linear = item.value()->as<torch::nn::LinearImpl>();
    if (!linear) continue;
    auto* a = lora_adapter_of(*linear);
    if (!a || a->merged == merge) continue;
    auto& w = linear->weight;
    replace_weight_values(w, w.to(torch::kFloat64) + (merge ? 1.0 : -1.0) * a->delta().to(w.device()));
    a->merged = merge;
  }
}

}  // namespace diffuse::nn
