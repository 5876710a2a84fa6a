#pragma once
// What is random in a training step, drawn from a generator seeded by (seed, step) so a resumed
// run repeats the uninterrupted one: the step's seed, the training t (the objective's, then SD3's
// shift) and conditioning dropout.
#include <cstdint>
#include <utility>

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "diffuse/data/shapes_dataset.hpp"
#include "diffuse/timesteps/shift.hpp"

namespace diffuse::training {

namespace trainer_detail {

inline std::uint64_t step_seed(std::uint64_t seed, std::int64_t step) { return data::mix_seed(seed ^ 0x7261696eull, static_cast<std::uint64_t>(step)); }

// The objective's t, then SD3's shift (eq. 23) when `shift` != 1: for a logit-normal(m, s) that is
// logit-normal(m + log shift, s), so shift < 1 moves training towards the data end, as the
// paper's resolution rule asks for images with fewer pixels than its base.
template <class Objective>
torch::Tensor sample_training_t(const Objective& objective, double shift, std::int64_t n, at::Generator& gen,
                                const torch::Tensor& like) {
  const auto t = objective.sample_t(n, gen, like);
  return shift == 1.0 ? t : timesteps::Shift{shift}(t);
}

}  // namespace trainer_detail

// Conditioning dropout (SD3 paper, section 5.3: each text encoder dropped independently, 46.3%):
// here the context and the pooled vector are dropped independently with probability `rate`
// (zeros, as at inference), so both are dropped for rate^2 of the examples. Returns the keep masks
// (1 kept, 0 dropped), each (b) float32.
inline std::pair<torch::Tensor, torch::Tensor> conditioning_keep_masks(std::int64_t b, double rate, at::Generator& gen) {
  auto keep = [&] { return (torch::rand({b}, gen) >= rate).to(torch::kFloat32); };
  auto a = keep();
  return {a, keep()};
}

}  // namespace diffuse::training
