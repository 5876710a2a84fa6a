#pragma once
// modulate(LayerNorm(x), shift, scale) = LN(x) (1 + scale) + shift in one pass over memory on the
// CPU (adaLN-Zero, Peebles & Xie 2023; LayerNorm without affine, eps 1e-6 in MM-DiT).
//
// Why: composed from LibTorch 1.13 operators, a bf16 activation takes five passes forward (to
// float32, LayerNorm, back to bf16, 1 + scale, addcmul) and about eight backward, and MM-DiT does
// this twice per stream per block. Here forward is one pass per row (statistics in float32, kept
// for backward) and backward two, with the shift and scale gradients summed per batch element.
// Rows are normalised in float32 whatever the dtype; float32 and bfloat16 are read and written
// directly. Other devices, dtypes, or widths that are not a multiple of 16 use the composition.
#include <cmath>
#include <cstdint>

#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include "diffuse/nn/cpu_lanes.hpp"
#include "diffuse/nn/modulation.hpp"

namespace diffuse::nn {

namespace mln_detail {

using namespace lanes_detail;

// Rows [r0, r1) of x (rows of width d; row r belongs to batch element r / per_batch): writes y and
// each row's mean and 1 / std.
template <class T>
DIFFUSE_CPU_SPAN void forward_rows(const T* x, T* y, const float* shift, const float* scale1, float* mean, float* rstd,
                                     std::int64_t d, std::int64_t per_batch, float eps, std::int64_t r0, std::int64_t r1) {
  vf v, acc;
  for (std::int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * d;
    acc = vf{};
    for (std::int64_t k = 0; k < d; k += lanes) {
      load(xr + k, v);
      acc += v;
    }
    const float m = sum_lanes(acc) / static_cast<float>(d);
    acc = vf{};
    for (std::int64_t k = 0; k < d; k += lanes) {
      load(xr + k, v);
      v -= m;
      acc += v * v;
    }
    const float rs = 1.0f / std::sqrt(sum_lanes(acc) / static_cast<float>(d) + eps);
    mean[r] = m, rstd[r] = rs;
    const std::int64_t b = r / per_batch;
    const float* sh = shift + b * d;
    const float* sc = scale1 + b * d;
    T* yr = y + r * d;
    vf a, c;
    for (std::int64_t k = 0; k < d; k += lanes) {
      load(xr + k, v);
      load(sc + k, a);
      load(sh + k, c);
      v = (v - m) * rs * a + c;
      store(yr + k, v);
    }
  }
}

// Batch elements [b0, b1): dx for their rows, and the shift and scale gradients (float32, (B, d)).
template <class T>
DIFFUSE_CPU_SPAN void backward_batches(const T* gy, const T* x, const float* scale1, const float* mean, const float* rstd,
                                         T* dx, float* dshift, float* dscale, std::int64_t d, std::int64_t per_batch,
                                         std::int64_t b0, std::int64_t b1) {
  vf g, v, a, s1, s2, acc_shift, acc_scale;
  for (std::int64_t b = b0; b < b1; ++b) {
    const float* sc = scale1 + b * d;
    float* dsh = dshift + b * d;
    float* dsc = dscale + b * d;
    for (std::int64_t k = 0; k < d; ++k) dsh[k] = 0, dsc[k] = 0;
    for (std::int64_t r = b * per_batch; r < (b + 1) * per_batch; ++r) {
      const T* gr = gy + r * d;
      const T* xr = x + r * d;
      const float m = mean[r], rs = rstd[r];
      s1 = vf{}, s2 = vf{};
      for (std::int64_t k = 0; k < d; k += lanes) {
        load(gr + k, g);
        load(xr + k, v);
        load(sc + k, a);
        v = (v - m) * rs;  // xhat
        load(dsh + k, acc_shift);
        load(dsc + k, acc_scale);
        acc_shift += g;
        acc_scale += g * v;
        store(dsh + k, acc_shift);
        store(dsc + k, acc_scale);
        g *= a;  // gradient of xhat
        s1 += g;
        s2 += g * v;
      }
      const float m1 = sum_lanes(s1) / static_cast<float>(d), m2 = sum_lanes(s2) / static_cast<float>(d);
      T* dr = dx + r * d;
      for (std::int64_t k = 0; k < d; k += lanes) {
        load(gr + k, g);
        load(xr + k, v);
        load(sc + k, a);
        v = (v - m) * rs;
        v = rs * (g * a - m1 - v * m2);
        store(dr + k, v);
      }
    }
  }
}

inline bool has_kernel(const torch::Tensor& x) {
  return x.is_cpu() && x.dim() == 3 && x.size(2) % lanes == 0 &&
         (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16);
}

struct Saved {
  torch::Tensor mean, rstd;
};

// The kernels read the modulation as contiguous float32 rows: shift, and 1 + scale.
inline torch::Tensor float_rows(const torch::Tensor& t) { return t.to(torch::kFloat32).contiguous(); }
inline torch::Tensor one_plus(const torch::Tensor& scale) { return (scale.to(torch::kFloat32) + 1).contiguous(); }

// x: (B, L, D) contiguous; shift, scale1: (B, D) float32 contiguous.
inline torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale1, double eps, Saved& saved) {
  const auto b = x.size(0), l = x.size(1), d = x.size(2);
  auto y = torch::empty_like(x);
  saved.mean = torch::empty({b * l}, torch::kFloat32);
  saved.rstd = torch::empty({b * l}, torch::kFloat32);
  const auto grain = std::max<std::int64_t>(1, 16384 / d);
  at::parallel_for(0, b * l, grain, [&](std::int64_t r0, std::int64_t r1) {
    auto rows = [&](auto* in, auto* out) {
      DIFFUSE_CPU_DISPATCH(forward_rows(in, out, shift.data_ptr<float>(), scale1.data_ptr<float>(), saved.mean.data_ptr<float>(),
                                        saved.rstd.data_ptr<float>(), d, l, static_cast<float>(eps), r0, r1));
    };
    if (x.scalar_type() == torch::kFloat32) rows(x.data_ptr<float>(), y.data_ptr<float>());
    else rows(x.data_ptr<c10::BFloat16>(), y.data_ptr<c10::BFloat16>());
  });
  return y;
}

struct Function : torch::autograd::Function<Function> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in, const torch::Tensor& shift,
                               const torch::Tensor& scale, double eps) {
    const auto x = x_in.contiguous();
    const auto scale1 = one_plus(scale);
    Saved s;
    auto y = mln_detail::forward(x, float_rows(shift), scale1, eps, s);
    ctx->save_for_backward({x, scale1, s.mean, s.rstd});
    ctx->saved_data["shift_dtype"] = static_cast<std::int64_t>(shift.scalar_type());
    ctx->saved_data["scale_dtype"] = static_cast<std::int64_t>(scale.scalar_type());
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& scale1 = saved[1];
    const auto gy = grads[0].to(x.scalar_type()).contiguous();
    const auto b = x.size(0), l = x.size(1), d = x.size(2);
    auto dx = torch::empty_like(x);
    auto dshift = torch::empty({b, d}, torch::kFloat32), dscale = torch::empty({b, d}, torch::kFloat32);
    at::parallel_for(0, b, 1, [&](std::int64_t b0, std::int64_t b1) {
      auto batches = [&](auto* gy_, auto* in, auto* dx_) {
        DIFFUSE_CPU_DISPATCH(backward_batches(gy_, in, scale1.data_ptr<float>(), saved[2].data_ptr<float>(),
                                              saved[3].data_ptr<float>(), dx_, dshift.data_ptr<float>(),
                                              dscale.data_ptr<float>(), d, l, b0, b1));
      };
      if (x.scalar_type() == torch::kFloat32) batches(gy.data_ptr<float>(), x.data_ptr<float>(), dx.data_ptr<float>());
      else batches(gy.data_ptr<c10::BFloat16>(), x.data_ptr<c10::BFloat16>(), dx.data_ptr<c10::BFloat16>());
    });
    const auto shift_dtype = static_cast<torch::ScalarType>(ctx->saved_data["shift_dtype"].toInt());
    const auto scale_dtype = static_cast<torch::ScalarType>(ctx->saved_data["scale_dtype"].toInt());
    return {dx, dshift.to(shift_dtype), dscale.to(scale_dtype), torch::Tensor()};
  }
};

}  // namespace mln_detail

// x: (B, L, D); shift, scale: (B, D). LayerNorm without affine parameters, then x (1 + scale) + shift.
inline torch::Tensor modulated_layer_norm(const torch::Tensor& x, const torch::Tensor& shift, const torch::Tensor& scale,
                                          double eps = 1e-6) {
  if (!mln_detail::has_kernel(x) || shift.dim() != 2 || scale.dim() != 2)
    return modulate(layer_norm_no_affine(x, eps), shift, scale);
  const bool grad = torch::GradMode::is_enabled() && (x.requires_grad() || shift.requires_grad() || scale.requires_grad());
  if (grad) return mln_detail::Function::apply(x, shift, scale, eps);
  mln_detail::Saved s;
  return mln_detail::forward(x.contiguous(), mln_detail::float_rows(shift), mln_detail::one_plus(scale), eps, s);
}

}  // namespace diffuse::nn
