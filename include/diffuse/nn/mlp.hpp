#pragma once
// The transformer MLP of MM-DiT: fc1 (D -> 4D) -> GELU(tanh approximation) -> fc2 (4D -> D)
// (SD3_FACTS (d) 7; exact GELU would move the reference output by 8.5e-5 of its scale).
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/nn/gelu_tanh.hpp"
#include "diffuse/nn/layers.hpp"
#include "diffuse/nn/rowwise_linear.hpp"

namespace diffuse::nn {

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(std::int64_t dim, std::int64_t hidden) {
    fc1 = register_module("fc1", nn::linear(dim, hidden));
    fc2 = register_module("fc2", nn::linear(hidden, dim));
  }
  // GELU through nn/gelu_tanh.hpp: on the CPU one vectorised pass in float32 whatever the
  // activation dtype (LibTorch 1.13's own is scalar, and for bf16 needs two conversions).
  torch::Tensor forward(const torch::Tensor& x) { return rowwise_linear(fc2, gelu_tanh(rowwise_linear(fc1, x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace diffuse::nn
