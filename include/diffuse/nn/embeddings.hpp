#pragma once
// The MM-DiT's input embeddings (SD3_FACTS (d) 1, 2, 8-10):
//   timestep_embedding: 256 frequencies exp(-ln(10000) k / 128), [cos, sin] (cos first), of t = 1000 sigma,
//                       in float32 as the reference computes it;
//   TimestepEmbedder / VectorEmbedder: Linear -> SiLU -> Linear (keys mlp.0, mlp.2);
//   PatchEmbed: Conv2d(k = s = patch), tokens in row-major (h, w) order (key proj);
//   sincos_pos_embed_2d: the 2-D sin-cos table (sin first; first half of the channels encodes the
//                        column), for training from scratch: loaders read the stored buffer;
//   crop_pos_embed: the centre crop of a (1, P*P, D) table to an h x w patch grid;
//   unpatchify: (N, h*w, p*p*C) -> (N, C, h*p, w*p), channel index (py*p + px)*C + c.
#include <cmath>

#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/core/error.hpp"
#include "diffuse/nn/layers.hpp"
#include "diffuse/nn/rowwise_linear.hpp"

namespace diffuse::nn {

// t: (B) -> (B, dim), in t's floating dtype.
inline torch::Tensor timestep_embedding(const torch::Tensor& t, std::int64_t dim = 256, double max_period = 10000.0) {
  const auto half = dim / 2;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(t.device());
  const auto freqs = torch::exp(-std::log(max_period) * torch::arange(0, half, opts) / static_cast<double>(half));
  const auto args = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);  // (B, half)
  auto emb = torch::cat({torch::cos(args), torch::sin(args)}, -1);
  if (dim % 2) emb = torch::cat({emb, torch::zeros_like(emb.narrow(1, 0, 1))}, -1);
  return t.is_floating_point() ? emb.to(t.scalar_type()) : emb;
}

// Linear(in, hidden) -> SiLU -> Linear(hidden, hidden), registered as "mlp".
class MLPEmbedderImpl : public torch::nn::Module {
 public:
  MLPEmbedderImpl(std::int64_t in, std::int64_t hidden) {
    mlp = register_module("mlp", torch::nn::Sequential(nn::linear(in, hidden), torch::nn::SiLU(),
                                                       nn::linear(hidden, hidden)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return rowwise_linear(linear_at(mlp, 2), torch::silu(rowwise_linear(linear_at(mlp, 0), x)));
  }
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(MLPEmbedder);

class TimestepEmbedderImpl : public MLPEmbedderImpl {
 public:
  explicit TimestepEmbedderImpl(std::int64_t hidden, std::int64_t frequencies = 256)
      : MLPEmbedderImpl(frequencies, hidden), frequencies_(frequencies) {}
  // t = 1000 sigma, (B); the embedding is cast to `dtype` before the MLP.
  torch::Tensor forward(const torch::Tensor& t, torch::ScalarType dtype) {
    return MLPEmbedderImpl::forward(timestep_embedding(t, frequencies_).to(dtype));
  }

 private:
  std::int64_t frequencies_;
};
TORCH_MODULE(TimestepEmbedder);

class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(std::int64_t in_channels, std::int64_t hidden, std::int64_t patch) : patch_(patch) {
    proj = register_module("proj", nn::conv2d(torch::nn::Conv2dOptions(in_channels, hidden, patch).stride(patch)));
  }
  // (B, C, H, W) -> (B, H/p * W/p, hidden)
  torch::Tensor forward(const torch::Tensor& x) {
    if (x.size(2) % patch_ || x.size(3) % patch_)
      throw InputError("MM-DiT: latent size " + std::to_string(x.size(2)) + "x" + std::to_string(x.size(3)) +
                       " is not a multiple of the patch size " + std::to_string(patch_));
    // The stride-p convolution as one matrix product over (C, py, px)-ordered patches, which is
    // the conv weight's own layout: the same numbers, and on the CPU the backward pass is 10x
    // cheaper than LibTorch 1.13's convolution_backward at the shapes model's size.
    const auto b = x.size(0), c = x.size(1), h = x.size(2) / patch_, w = x.size(3) / patch_;
    const auto patches = x.reshape({b, c, h, patch_, w, patch_}).permute({0, 2, 4, 1, 3, 5}).reshape({b, h * w, c * patch_ * patch_});
    return rowwise_linear(patches, proj->weight.reshape({proj->weight.size(0), -1}), proj->bias);  // (B, h*w, D)
  }
  torch::nn::Conv2d proj{nullptr};

 private:
  std::int64_t patch_;
};
TORCH_MODULE(PatchEmbed);

// 1-D sin-cos embedding of positions for `dim` channels: [sin(pos w), cos(pos w)], w_k = 10000^(-k / (dim/2)).
inline torch::Tensor sincos_1d(std::int64_t dim, const torch::Tensor& pos) {
  const auto omega = 1.0 / torch::pow(10000.0, torch::arange(dim / 2, torch::kFloat64) / (dim / 2.0));
  const auto out = pos.reshape({-1, 1}).to(torch::kFloat64) * omega.unsqueeze(0);  // (M, dim/2)
  return torch::cat({torch::sin(out), torch::cos(out)}, 1);
}

// The (1, P*P, dim) table of a P x P grid; the first half of the channels encodes the column
// (MAE convention, as the SD3 reference generates it), float32.
inline torch::Tensor sincos_pos_embed_2d(std::int64_t dim, std::int64_t grid) {
  const auto coords = torch::arange(grid, torch::kFloat64);
  const auto mesh = torch::meshgrid({coords, coords}, "xy");  // mesh[0][i][j] = j (column), mesh[1][i][j] = i
  const auto emb = torch::cat({sincos_1d(dim / 2, mesh[0]), sincos_1d(dim / 2, mesh[1])}, 1);  // (P*P, dim)
  return emb.to(torch::kFloat32).unsqueeze(0);
}

// Centre crop of a (1, P*P, D) table to an h x w patch grid -> (1, h*w, D).
inline torch::Tensor crop_pos_embed(const torch::Tensor& table, std::int64_t h, std::int64_t w) {
  const auto p = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(table.size(1)))));
  if (h > p || w > p)
    throw InputError("MM-DiT: a " + std::to_string(h) + "x" + std::to_string(w) + " patch grid exceeds pos_embed_max_size " +
                     std::to_string(p) + " (latent too large for this model)");
  const auto top = (p - h) / 2, left = (p - w) / 2;
  return table.view({1, p, p, -1}).narrow(1, top, h).narrow(2, left, w).reshape({1, h * w, -1});
}

// (N, h*w, p*p*C) -> (N, C, h*p, w*p)
inline torch::Tensor unpatchify(const torch::Tensor& x, std::int64_t h, std::int64_t w, std::int64_t p, std::int64_t c) {
  return x.view({x.size(0), h, w, p, p, c}).permute({0, 5, 1, 3, 2, 4}).reshape({x.size(0), c, h * p, w * p});
}

}  // namespace diffuse::nn
