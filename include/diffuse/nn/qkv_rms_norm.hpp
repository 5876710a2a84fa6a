#pragma once
// The qkv projection's output split into q, k, v with per-head RMSNorm of q and k (SD3.5's QK
// norm, Zhang & Sennrich 2019: x / sqrt(mean(x^2) + eps) * weight over each head's values), in one
// pass over memory on the CPU.
//
// Why: composed from LibTorch 1.13 operators this is a view, an unbind, five operators per norm
// forward (pow, mean, add, rsqrt, two products), about ten backward, a copy for v, and a float32
// promotion of bf16 q and k (the float32 weight), repeated for both streams of every block: ~150
// operator calls per training step of the shapes model. Here forward is one pass per row and
// backward one, statistics in float32 whatever the dtype; q, k, v come out contiguous in qkv's
// dtype. Other devices, dtypes, or head sizes that are not a multiple of 16 use the composition.
#include <cmath>
#include <cstdint>

#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/types.h>

#include "diffuse/nn/cpu_lanes.hpp"
#include "diffuse/nn/rms_norm.hpp"

namespace diffuse::nn {

struct QKV {
  torch::Tensor q, k, v;  // each (B, L, heads * head_dim)
};

namespace qkv_norm_detail {

using namespace lanes_detail;

// Rows [r0, r1) of qkv (rows of 3 d = [q | k | v]): writes q, k (normalised, times wq / wk), v and
// each head's 1 / rms (rstd: per row, heads values for q then heads for k).
template <class T>
DIFFUSE_CPU_SPAN void forward_rows(const T* qkv, T* q, T* k, T* v, const float* wq, const float* wk, float* rstd,
                                     std::int64_t heads, std::int64_t hd, float eps, std::int64_t r0, std::int64_t r1) {
  const std::int64_t d = heads * hd;
  vf x, w, acc;
  for (std::int64_t r = r0; r < r1; ++r) {
    const T* in = qkv + r * 3 * d;
    for (int part = 0; part < 2; ++part) {
      const float* wp = part == 0 ? wq : wk;
      T* out = (part == 0 ? q : k) + r * d;
      for (std::int64_t h = 0; h < heads; ++h) {
        const T* xs = in + part * d + h * hd;
        acc = vf{};
        for (std::int64_t i = 0; i < hd; i += lanes) {
          load(xs + i, x);
          acc += x * x;
        }
        const float rs = 1.0f / std::sqrt(sum_lanes(acc) / static_cast<float>(hd) + eps);
        rstd[(r * 2 + part) * heads + h] = rs;
        for (std::int64_t i = 0; i < hd; i += lanes) {
          load(xs + i, x);
          load(wp + i, w);
          x = x * rs * w;
          store(out + h * hd + i, x);
        }
      }
    }
    const T* vs = in + 2 * d;
    T* vo = v + r * d;
    for (std::int64_t i = 0; i < d; ++i) vo[i] = vs[i];
  }
}

// Batch elements [b0, b1) (rows of per_batch): dqkv for their rows, and each batch element's
// weight gradients dw (float32 (B, 2, hd): wq then wk), summed by the caller.
template <class T>
DIFFUSE_CPU_SPAN void backward_batches(const T* gq, const T* gk, const T* gv, const T* qkv, const float* wq, const float* wk,
                                         const float* rstd, T* dqkv, float* dw, std::int64_t heads, std::int64_t hd,
                                         std::int64_t per_batch, std::int64_t b0, std::int64_t b1) {
  const std::int64_t d = heads * hd;
  vf g, x, w, s, acc;
  for (std::int64_t b = b0; b < b1; ++b) {
    float* dwb = dw + b * 2 * hd;
    for (std::int64_t i = 0; i < 2 * hd; ++i) dwb[i] = 0;
    for (std::int64_t r = b * per_batch; r < (b + 1) * per_batch; ++r) {
      const T* in = qkv + r * 3 * d;
      T* out = dqkv + r * 3 * d;
      for (int part = 0; part < 2; ++part) {
        const float* wp = part == 0 ? wq : wk;
        const T* gp = (part == 0 ? gq : gk) + r * d;
        float* dwp = dwb + part * hd;
        for (std::int64_t h = 0; h < heads; ++h) {
          const T* xs = in + part * d + h * hd;
          const T* gs = gp + h * hd;
          const float rs = rstd[(r * 2 + part) * heads + h];
          // y = x rs w: dx = rs (g w) - x rs^3 mean(g w x); dw += g x rs
          s = vf{};
          for (std::int64_t i = 0; i < hd; i += lanes) {
            load(gs + i, g);
            load(xs + i, x);
            load(wp + i, w);
            s += g * w * x;
            load(dwp + i, acc);
            acc += g * x * rs;
            store(dwp + i, acc);
          }
          const float c = sum_lanes(s) / static_cast<float>(hd) * rs * rs * rs;
          T* dxs = out + part * d + h * hd;
          for (std::int64_t i = 0; i < hd; i += lanes) {
            load(gs + i, g);
            load(xs + i, x);
            load(wp + i, w);
            x = g * w * rs - x * c;
            store(dxs + i, x);
          }
        }
      }
      const T* gvs = gv + r * d;
      T* dv = out + 2 * d;
      for (std::int64_t i = 0; i < d; ++i) dv[i] = gvs[i];
    }
  }
}

inline bool has_kernel(const torch::Tensor& qkv, std::int64_t heads) {
  return qkv.is_cpu() && qkv.dim() == 3 && qkv.size(2) % (3 * heads) == 0 && (qkv.size(2) / (3 * heads)) % lanes == 0 &&
         (qkv.scalar_type() == torch::kFloat32 || qkv.scalar_type() == torch::kBFloat16);
}

inline torch::Tensor float_weight(const torch::Tensor& w) { return w.detach().to(torch::kFloat32).contiguous(); }

// qkv: (B, L, 3 D) contiguous; wq, wk: (hd) float32 contiguous. rstd: (B L, 2, heads) float32.
inline QKV forward(const torch::Tensor& qkv, const torch::Tensor& wq, const torch::Tensor& wk, std::int64_t heads, double eps,
                   torch::Tensor& rstd) {
  const auto b = qkv.size(0), l = qkv.size(1), d = qkv.size(2) / 3, hd = d / heads;
  QKV o{torch::empty({b, l, d}, qkv.options()), torch::empty({b, l, d}, qkv.options()), torch::empty({b, l, d}, qkv.options())};
  rstd = torch::empty({b * l, 2, heads}, torch::kFloat32);
  const auto grain = std::max<std::int64_t>(1, 8192 / d);
  at::parallel_for(0, b * l, grain, [&](std::int64_t r0, std::int64_t r1) {
    auto rows = [&](auto* in, auto* q, auto* k, auto* v) {
      DIFFUSE_CPU_DISPATCH(forward_rows(in, q, k, v, wq.data_ptr<float>(), wk.data_ptr<float>(), rstd.data_ptr<float>(),
                                        heads, hd, static_cast<float>(eps), r0, r1));
    };
    if (qkv.scalar_type() == torch::kFloat32)
      rows(qkv.data_ptr<float>(), o.q.data_ptr<float>(), o.k.data_ptr<float>(), o.v.data_ptr<float>());
    else
      rows(qkv.data_ptr<c10::BFloat16>(), o.q.data_ptr<c10::BFloat16>(), o.k.data_ptr<c10::BFloat16>(),
           o.v.data_ptr<c10::BFloat16>());
  });
  return o;
}

struct Function : torch::autograd::Function<Function> {
  // Returns {q, k, v}.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv_in,
                                                const torch::Tensor& wq, const torch::Tensor& wk, std::int64_t heads, double eps) {
    const auto qkv = qkv_in.contiguous();
    const auto wq32 = float_weight(wq), wk32 = float_weight(wk);
    torch::Tensor rstd;
    auto o = qkv_norm_detail::forward(qkv, wq32, wk32, heads, eps, rstd);
    ctx->save_for_backward({qkv, wq32, wk32, rstd});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["w_dtype"] = static_cast<std::int64_t>(wq.scalar_type());
    return {o.q, o.k, o.v};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& qkv = saved[0];
    const auto heads = ctx->saved_data["heads"].toInt();
    const auto b = qkv.size(0), l = qkv.size(1), d = qkv.size(2) / 3, hd = d / heads;
    auto grad = [&](const torch::Tensor& g) {  // an unused output has no gradient: zeros
      return g.defined() ? g.to(qkv.scalar_type()).contiguous() : torch::zeros({b, l, d}, qkv.options());
    };
    const auto gq = grad(grads[0]), gk = grad(grads[1]), gv = grad(grads[2]);
    auto dqkv = torch::empty_like(qkv);
    auto dw = torch::empty({b, 2, hd}, torch::kFloat32);
    at::parallel_for(0, b, 1, [&](std::int64_t b0, std::int64_t b1) {
      auto batches = [&](auto* gq_, auto* gk_, auto* gv_, auto* in, auto* dqkv_) {
        DIFFUSE_CPU_DISPATCH(backward_batches(gq_, gk_, gv_, in, saved[1].data_ptr<float>(), saved[2].data_ptr<float>(),
                                              saved[3].data_ptr<float>(), dqkv_, dw.data_ptr<float>(), heads, hd, l, b0, b1));
      };
      if (qkv.scalar_type() == torch::kFloat32)
        batches(gq.data_ptr<float>(), gk.data_ptr<float>(), gv.data_ptr<float>(), qkv.data_ptr<float>(), dqkv.data_ptr<float>());
      else
        batches(gq.data_ptr<c10::BFloat16>(), gk.data_ptr<c10::BFloat16>(), gv.data_ptr<c10::BFloat16>(),
                qkv.data_ptr<c10::BFloat16>(), dqkv.data_ptr<c10::BFloat16>());
    });
    const auto w_dtype = static_cast<torch::ScalarType>(ctx->saved_data["w_dtype"].toInt());
    const auto dws = dw.sum(0).to(w_dtype);  // (2, hd)
    return {dqkv, dws[0], dws[1], torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace qkv_norm_detail

// qkv: (B, L, 3 heads hd) = [q | k | v]; wq, wk: (hd), or undefined for no QK norm.
// Returns q, k (normalised per head), v, each (B, L, heads hd).
inline QKV split_qkv_rms_norm(const torch::Tensor& qkv, std::int64_t heads, const torch::Tensor& wq, const torch::Tensor& wk,
                              double eps = 1e-6) {
  const auto b = qkv.size(0), l = qkv.size(1), hd = qkv.size(2) / (3 * heads);
  if (wq.defined() && qkv_norm_detail::has_kernel(qkv, heads)) {
    const bool grad = torch::GradMode::is_enabled() && (qkv.requires_grad() || wq.requires_grad() || wk.requires_grad());
    if (grad) {
      const auto o = qkv_norm_detail::Function::apply(qkv, wq, wk, heads, eps);
      return {o[0], o[1], o[2]};
    }
    torch::Tensor rstd;
    return qkv_norm_detail::forward(qkv.contiguous(), qkv_norm_detail::float_weight(wq), qkv_norm_detail::float_weight(wk),
                                    heads, eps, rstd);
  }
  const auto parts = qkv.view({b, l, 3, heads, hd}).unbind(2);  // 3 x (B, L, heads, hd)
  auto q = parts[0], k = parts[1];
  if (wq.defined()) q = rms_norm(q, wq, eps), k = rms_norm(k, wk, eps);  // in the activation dtype, as the reference
  return {q.reshape({b, l, -1}), k.reshape({b, l, -1}), parts[2].reshape({b, l, -1})};
}

}  // namespace diffuse::nn
