#pragma once
// Where a Linear's weight lies in memory, for CPU inference in float32.
//
// A checkpoint stores W (N, K) row-major, and that is what LibTorch allocates. For a batch-1
// forward on the CPU the transposed storage is faster: with W^T contiguous (the (N, K) tensor a
// view with strides (1, N)) sixteen output features of one input column are one vector load, and
// cpu_linear's column-major kernel multiplies without packing or transposing anything (SD3-medium
// token products 1.08-1.14x the row-major kernel, adaLN rows 1.5x; docs/performance.md). The
// values, shapes and names do not change, so everything else (at::linear, autograd, saving, which
// writes contiguous copies) works on either layout; only the speed of the float32 CPU kernels
// differs, and bfloat16 gains nothing from it (oneDNN packs its own way).
//
// Laying out copies each weight once (one weight's worth of extra memory at a time); a weight that
// was a view of a memory-mapped file becomes ordinary memory. On Linux the copies of 2 MiB and more
// ask for transparent huge pages: the column-major kernel reads 128 rows of W^T, N floats apart,
// per slice (128 pages of 4 KiB where N >= 1024), and huge pages made the SD3-medium forward 2-4%
// faster (same process, alternating; docs/performance.md).
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/core/cpu_features.hpp"
#include "diffuse/core/huge_pages.hpp"

namespace diffuse::nn {

enum class WeightLayout {
  RowMajor,     // W (N, K) contiguous: as stored in checkpoints, as LibTorch allocates
  ColumnMajor,  // W^T (K, N) contiguous; the weight tensor a (N, K) view with strides (1, N)
};

// True for a 2-D tensor stored transposed: W^T contiguous, strides (1, N).
inline bool is_column_major(const torch::Tensor& w) {
  return w.dim() == 2 && w.stride(0) == 1 && w.stride(1) == w.size(0);
}

// The layout a loader picks when not told: column-major where cpu_linear's column-major kernel
// can run (float32 on an x86-64 CPU with AVX-512), as stored otherwise. Measured at SD3-medium
// (docs/performance.md): on the AMD EPYC machine kind column-major is 76-85% of the GEMM rate at
// 256² against 66-73% as stored, and 73% against 61% at 512²; on the Xeon kind 66-76% against
// 66-70% at 256², 71-72% against 73-76% at 512². bfloat16 keeps the weights as stored (the
// one-row bf16 kernel reads them row-major; oneDNN is no faster either way).
inline WeightLayout preferred_weight_layout(torch::ScalarType dtype, const torch::Device& device) {
  if (dtype == torch::kFloat32 && device.is_cpu() && use_avx512f()) return WeightLayout::ColumnMajor;
  return WeightLayout::RowMajor;
}

// Gives weight `w` the values `values` (any dtype; stored in w's dtype) in memory of its own, laid
// out as w is (column-major stays column-major), so the kernel it takes does not change. A weight
// that was a view of a memory-mapped file is not written through.
inline void replace_weight_values(torch::Tensor& w, const torch::Tensor& values) {
  const auto v = values.to(w.device(), w.scalar_type());
  w.set_data(is_column_major(w) && !w.is_contiguous() ? v.t().contiguous().t() : v.contiguous());
}

// Lays every Linear weight of `module` (itself and all its submodules) out as `layout`. Weights
// already laid out so are left as they are.
inline void set_linear_weight_layout(torch::nn::Module& module, WeightLayout layout) {
  torch::NoGradGuard no_grad;
  const auto apply = [layout](torch::nn::Module& m) {
    auto* linear = m.as<torch::nn::LinearImpl>();
    if (!linear || !linear->weight.defined() || linear->weight.dim() != 2) return;
    auto& w = linear->weight;
    if (layout == WeightLayout::ColumnMajor) {
      if (is_column_major(w)) return;
      if (w.is_cpu() && w.scalar_type() == torch::kFloat32) {
        auto t = huge_page_empty({w.size(1), w.size(0)}, torch::kFloat32);
        w.set_data(t.copy_(w.t()).t());
      } else {
        w.set_data(w.t().contiguous().t());
      }
    } else if (!w.is_contiguous()) {
      w.set_data(w.contiguous());
    }
  };
  apply(module);  // itself apart: modules(include_self = true) needs a module held by a shared_ptr
  for (const auto& child : module.modules(/*include_self=*/false)) apply(*child);
}

}  // namespace diffuse::nn
