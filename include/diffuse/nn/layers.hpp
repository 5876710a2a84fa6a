#pragma once
// The LibTorch layers the library's modules are built from (Linear, Conv2d, Embedding), made so a
// module about to be filled from a file can skip their random initialisation.
//
// LibTorch's constructors draw every weight (Kaiming-uniform, normal; serial, about 12 ns a
// parameter on the CPU): 24 s of SD3-medium's 2B parameters, all replaced by the loader a moment
// later. Inside a `SkipParameterInit` scope these factories allocate the parameters only (no page is
// touched until a loader sets them), as PyTorch's `torch.nn.utils.skip_init` and accelerate's
// `init_empty_weights` do. The scope is per thread and nests, like `torch::NoGradGuard`; outside it
// the layers are LibTorch's own, drawn from the global generator as before.
#include <cstdint>

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/core/error.hpp"

namespace diffuse::nn {

class SkipParameterInit {
 public:
  SkipParameterInit() { ++depth(); }
  ~SkipParameterInit() { --depth(); }
  SkipParameterInit(const SkipParameterInit&) = delete;
  SkipParameterInit& operator=(const SkipParameterInit&) = delete;
  static bool active() { return depth() > 0; }

 private:
  static int& depth() {
    thread_local int d = 0;
    return d;
  }
};

// Linear(in, out): y = x W^T + b.
inline torch::nn::Linear linear(std::int64_t in, std::int64_t out, bool bias = true) {
  if (!SkipParameterInit::active()) return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
  torch::nn::Linear m(torch::nn::LinearOptions(1, 1).bias(bias));  // a 1x1 draw instead of in x out
  torch::NoGradGuard no_grad;
  m->options.in_features(in).out_features(out);
  m->weight.set_data(torch::empty({out, in}));
  if (bias) m->bias.set_data(torch::empty({out}));
  return m;
}

// Conv2d with `o`'s sizes (groups 1, as every convolution here).
inline torch::nn::Conv2d conv2d(const torch::nn::Conv2dOptions& o) {
  if (!SkipParameterInit::active()) return torch::nn::Conv2d(o);
  if (o.groups() != 1) throw Error("nn::conv2d: groups other than 1 are not built here");
  auto small = o;
  small.in_channels(1).out_channels(1);
  torch::nn::Conv2d m(small);
  torch::NoGradGuard no_grad;
  m->options.in_channels(o.in_channels()).out_channels(o.out_channels());
  const auto k = o.kernel_size();
  m->weight.set_data(torch::empty({o.out_channels(), o.in_channels(), (*k)[0], (*k)[1]}));
  if (o.bias()) m->bias.set_data(torch::empty({o.out_channels()}));
  return m;
}

// Embedding(count, dim): a table of `count` rows.
inline torch::nn::Embedding embedding(std::int64_t count, std::int64_t dim) {
  if (!SkipParameterInit::active()) return torch::nn::Embedding(count, dim);
  torch::nn::Embedding m(torch::nn::EmbeddingOptions(count, dim)._weight(torch::empty({count, dim})));  // taken, not drawn
  m->options._weight(torch::Tensor());  // a clone() draws its own table instead of sharing this one
  return m;
}

}  // namespace diffuse::nn
