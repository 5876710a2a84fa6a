#pragma once
// adaLN-Zero pieces (Peebles & Xie 2023, as in SD3): LayerNorm without affine parameters
// (eps 1e-6) and modulate(x) = x (1 + scale) + shift, with (B, D) shift/scale broadcast over tokens.
#include <torch/types.h>

namespace diffuse::nn {

inline torch::Tensor layer_norm_no_affine(const torch::Tensor& x, double eps = 1e-6) {
  return at::layer_norm(x, {x.size(-1)}, {}, {}, eps);
}

// x: (B, L, D); shift, scale: (B, D)
inline torch::Tensor modulate(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale) {
  return torch::addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1));
}

}  // namespace diffuse::nn
