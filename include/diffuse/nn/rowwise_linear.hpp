#pragma once
// A Linear layer applied to every token of a (B, L, D) activation as one (B L, D) matrix product
// with the bias fused (addmm). LibTorch 1.13's at::linear does that only for 2-D input: on 3-D
// input it runs matmul and then a separate bias add_ over the whole output, which in bf16 on the
// CPU cost ~5 ms of a ~150 ms training step of the shapes model (31 linears, docs/performance.md).
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

namespace diffuse::nn {

inline torch::Tensor rowwise_linear(torch::nn::Linear& m, const torch::Tensor& x) {
  if (x.dim() <= 2) return m(x);
  auto sizes = x.sizes().vec();
  sizes.back() = m->weight.size(0);
  return m(x.reshape({-1, x.size(-1)})).view(sizes);
}

}  // namespace diffuse::nn
