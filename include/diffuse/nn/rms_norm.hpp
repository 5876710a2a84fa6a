#pragma once
// RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x^2) + eps) * weight, over the last dimension.
// SD3.5 applies it per attention head to q and k (SD3_FACTS (d) 5), eps 1e-6; forward() computes
// in the activation dtype as the reference does. The MM-DiT holds the weights here but on the CPU
// normalises through nn/qkv_rms_norm.hpp (float32 statistics, one rounding to bf16).
#include <torch/nn/module.h>
#include <torch/types.h>

namespace diffuse::nn {

// The formula, in x's dtype (also the fallback of nn/qkv_rms_norm.hpp).
inline torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * weight;
}

class RMSNormImpl : public torch::nn::Module {
 public:
  explicit RMSNormImpl(std::int64_t dim, double eps = 1e-6) : eps_(eps) {
    weight = register_parameter("weight", torch::ones({dim}));
  }
  torch::Tensor forward(const torch::Tensor& x) const {
    return rms_norm(x, weight, eps_);
  }
  double eps() const { return eps_; }
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace diffuse::nn
