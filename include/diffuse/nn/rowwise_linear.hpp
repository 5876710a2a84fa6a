#pragma once
// A Linear layer applied to every token of a (B, L, D) activation as one (B L, D) matrix product
// with the bias fused (addmm). LibTorch 1.13's at::linear does that only for 2-D input: on 3-D
// input it runs matmul and then a separate bias add_ over the whole output, which in bf16 on the
// CPU cost ~5 ms of a ~150 ms training step of the shapes model (31 linears, docs/performance.md).
//
// Inference in float32 on an AVX-512 CPU goes to cpu_linear.hpp, which reads the weight where it
// lies instead of packing it on every call (docs/performance.md); a weight laid out column-major
// (nn/linear_weight_layout.hpp) takes its faster kernel. Every linear of the MM-DiT's
// forward goes through here, the one-row adaLN and embedder products too: a single product left
// to OpenBLAS keeps its threads spinning for ~0.1 s afterwards, on the cores the next products use.
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/nn/cpu_linear.hpp"
#include "diffuse/nn/lora.hpp"

namespace diffuse::nn {

// x (..., K) @ weight (N, K)^T + bias (N) -> (..., N)
inline torch::Tensor rowwise_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  const auto x2d = x.dim() <= 2 ? x : x.reshape({-1, x.size(-1)});
  auto y = cpu_linear(x2d, weight, bias);  // at::linear where neither CPU kernel applies
  if (x.dim() <= 2) return y;
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  return y.view(sizes);
}

// A LoRA adapter attached to m (nn/lora.hpp) and not merged adds its low-rank term.
inline torch::Tensor rowwise_linear(torch::nn::LinearImpl& m, const torch::Tensor& x) {
  auto y = rowwise_linear(x, m.weight, m.bias);
  if (auto* a = lora_adapter_of(m); a && !a->merged) y = y + a->forward(x);
  return y;
}
inline torch::Tensor rowwise_linear(torch::nn::Linear& m, const torch::Tensor& x) { return rowwise_linear(*m, x); }

// The Linear at position i of a Sequential (a checkpoint's "adaLN_modulation.1", "mlp.0", ...).
inline torch::nn::LinearImpl& linear_at(torch::nn::Sequential& s, std::size_t i) {
  auto* m = s[i]->as<torch::nn::LinearImpl>();
  TORCH_CHECK(m != nullptr, "module ", i, " of the Sequential is not a Linear");
  return *m;
}

}  // namespace diffuse::nn
