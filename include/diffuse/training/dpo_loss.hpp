#pragma once
// Diffusion-DPO (Wallace et al. 2023, "Diffusion Model Alignment Using Direct Preference
// Optimization", eq. 14; the SD3 paper's last training stage): for a preferred ("chosen", w) and a
// dispreferred ("rejected", l) image of one prompt, noised with the same noise at the same t,
//   L = -log sigmoid(-(beta / 2) * ((err_w - ref_w) - (err_l - ref_l)))
// where err is the model's per-example mean squared error of its objective (rectified flow: the
// velocity error in place of the noise error) and ref the frozen reference model's. The 1/2 is
// the convention of Wallace et al.'s code; a script writing the loss without it uses half this
// beta for the same loss. Lowering L makes the model fit the chosen image better than the
// reference does, relative to the rejected one.
#include <torch/types.h>

#include "diffuse/core/error.hpp"

namespace diffuse::training {

struct DpoTerms {
  torch::Tensor loss;  // scalar, differentiable through err_w and err_l
  // For the log (means over the batch):
  double accuracy = 0;  // implicit accuracy: share of pairs with a positive margin, ties counted half
  double margin = 0;    // the reward margin -(beta / 2) ((err_w - ref_w) - (err_l - ref_l))
  double chosen_error = 0, rejected_error = 0, chosen_ref_error = 0, rejected_ref_error = 0;
};

// err_w, err_l, ref_w, ref_l: per-example errors, shape (B); ref_* carry no gradient.
inline DpoTerms dpo_loss(const torch::Tensor& err_w, const torch::Tensor& err_l, const torch::Tensor& ref_w,
                         const torch::Tensor& ref_l, double beta) {
  if (!(beta > 0)) throw InputError("DPO: beta must be positive");
  if (err_w.dim() != 1 || err_w.sizes() != err_l.sizes() || err_w.sizes() != ref_w.sizes() || err_w.sizes() != ref_l.sizes())
    throw InputError("DPO: the four error tensors must be per-example vectors of one length");
  const auto inside = -0.5 * beta * ((err_w - ref_w.detach()) - (err_l - ref_l.detach()));
  DpoTerms d;
  d.loss = -torch::log_sigmoid(inside).mean();
  const auto m = inside.detach().to(torch::kFloat64);
  d.accuracy = ((m > 0).to(torch::kFloat64) + 0.5 * (m == 0).to(torch::kFloat64)).mean().item<double>();
  d.margin = m.mean().item<double>();
  d.chosen_error = err_w.detach().to(torch::kFloat64).mean().item<double>();
  d.rejected_error = err_l.detach().to(torch::kFloat64).mean().item<double>();
  d.chosen_ref_error = ref_w.to(torch::kFloat64).mean().item<double>();
  d.rejected_ref_error = ref_l.to(torch::kFloat64).mean().item<double>();
  return d;
}

}  // namespace diffuse::training
