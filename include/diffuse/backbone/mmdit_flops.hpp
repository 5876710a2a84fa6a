#pragma once
// Floating-point operations of one MM-DiT forward pass (torch-free), counting a multiply-add as
// 2 FLOPs, for benchmarks that report achieved FLOP/s. Matrix products only (linear layers,
// attention scores and values, the patch convolution); norms and elementwise work are not counted.
#include <cstdint>

#include "diffuse/backbone/mmdit_config.hpp"

namespace diffuse::backbone {

// image_tokens = (H / p) (W / p) of the latent; context_tokens = L; per batch element.
inline double mmdit_forward_flops(const MMDiTConfig& c, std::int64_t image_tokens, std::int64_t context_tokens) {
  const double d = c.hidden_size(), m = c.mlp_hidden(), nx = double(image_tokens), nc = double(context_tokens);
  const double n = nx + nc;
  double f = 0;
  f += 2 * nx * (c.in_channels * c.patch * c.patch) * d;  // patch embedding
  f += 2 * nc * c.context_in * d;                            // context embedder
  f += 2 * (256 * d + d * d) + 2 * (c.adm_in * d + d * d);   // t and y embedders
  for (int i = 0; i < c.depth; ++i) {
    const bool last = i == c.depth - 1;
    const double rows_after = nx + (last ? 0 : nc);     // the last context block stops after q, k, v
    f += 2 * d * d * (last ? 8 : 12);                    // adaLN modulations (context 6 or 2, x 6) x D x D
    f += 2 * n * d * 3 * d;                              // q, k, v of both streams
    f += 2 * 2 * n * n * d;                              // scores and values of the joint attention
    f += 2 * rows_after * d * d;                         // output projections
    f += 2 * 2 * rows_after * d * m;                     // MLPs
    if (c.has_x_self_attn(i)) f += 2 * nx * d * 3 * d + 2 * 2 * nx * nx * d + 2 * nx * d * d + 2 * d * 3 * d;
  }
  f += 2 * d * 2 * d + 2 * nx * d * (c.patch * c.patch * c.out_ch());  // final layer
  return f;
}

}  // namespace diffuse::backbone
