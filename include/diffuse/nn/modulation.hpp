#pragma once
// adaLN-Zero pieces (Peebles & Xie 2023, as in SD3): LayerNorm without affine parameters
// (eps 1e-6) and modulate(x) = x (1 + scale) + shift, with (B, D) shift/scale broadcast over tokens.
#include <torch/types.h>

namespace diffuse::nn {

// On the CPU, bf16/f16 statistics are computed through float32: LibTorch 1.13's reduced-precision
// LayerNorm is 7x slower than converting (4.2 vs 0.6 ms at 410 x 1536, docs/performance.md). CUDA's
// kernel accumulates in float32 itself, and the round trip would only add memory traffic.
inline torch::Tensor layer_norm_no_affine(const torch::Tensor& x, double eps = 1e-6) {
  if (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64 || !x.is_cpu())
    return at::layer_norm(x, {x.size(-1)}, {}, {}, eps);
  return at::layer_norm(x.to(torch::kFloat32), {x.size(-1)}, {}, {}, eps).to(x.scalar_type());
}

// x: (B, L, D); shift, scale: (B, D)
inline torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  return torch::addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1));
}

}  // namespace diffuse::nn
