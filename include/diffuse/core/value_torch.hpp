#pragma once
// ValueOps for torch::Tensor: elementwise double functions on tensors (for formulas without a
// closed form). Evaluated on the CPU in float64 and returned in the input's dtype and device; not
// differentiable (these are schedule coefficients of t, which never needs a gradient).
#include <torch/types.h>

#include "diffuse/core/value.hpp"

namespace diffuse {

template <>
struct ValueOps<torch::Tensor> {
  template <class F>
  static torch::Tensor map(const torch::Tensor& x, F&& f) {
    auto host = x.detach().to(torch::kCPU, torch::kFloat64).contiguous().clone();
    double* p = host.data_ptr<double>();
    for (std::int64_t i = 0, n = host.numel(); i < n; ++i) p[i] = f(p[i]);
    return host.to(x.device(), x.scalar_type());
  }
};

}  // namespace diffuse
