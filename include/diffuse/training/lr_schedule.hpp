#pragma once
// Learning-rate schedules for a fixed budget (torch-free): linear warmup, then a constant rate or
// a decay to zero over the rest of the budget. The budget may be a step count or wall-clock time,
// so the decay is a function of progress in [0, 1] rather than of the step.
//   cosine: lr * (1 + cos(pi p)) / 2   (Loshchilov & Hutter, SGDR, 2017, without restarts)
//   linear: lr * (1 - p)
// Decaying to zero at the end of a fixed budget lets short runs finish settled: a constant rate
// leaves the weights jittering at the scale of the step size, which adds noise to comparisons
// between models trained on the same budget (the Table 3 runs, docs/vae_table3.md).
#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "diffuse/core/error.hpp"

namespace diffuse::training {

// The names a config may give; anything else is an input error naming the field.
inline void check_lr_decay(const std::string& decay, const std::string& field = "lr_decay") {
  if (decay != "constant" && decay != "cosine" && decay != "linear")
    throw InputError(field + " must be constant, cosine or linear (got \"" + decay + "\")");
}

// How far a run is through its budget: elapsed / (minutes * 60) for a wall-clock budget (minutes
// > 0), else step / steps.
inline double budget_progress(int step, int steps, double elapsed_seconds, double minutes) {
  return minutes > 0 ? elapsed_seconds / (minutes * 60) : static_cast<double>(step) / steps;
}

// The linear warm-up's factor at `step` (0-based): (step + 1) / warmup_steps up to 1; 1 without one.
inline double warmup_factor(int step, int warmup_steps) {
  return warmup_steps > 0 ? std::min(1.0, (step + 1.0) / warmup_steps) : 1.0;
}

// The rate at `progress` in [0, 1] of the budget (clamped), after `warmup` (a fraction of base
// rising linearly from 0 over the first steps, given by the caller as a factor in [0, 1]).
inline double scheduled_lr(double base, double progress, const std::string& decay, double warmup_factor = 1.0) {
  check_lr_decay(decay);
  const double p = std::clamp(progress, 0.0, 1.0);
  double f = 1.0;
  if (decay == "cosine") f = 0.5 * (1.0 + std::cos(std::numbers::pi * p));
  if (decay == "linear") f = 1.0 - p;
  return base * std::clamp(warmup_factor, 0.0, 1.0) * f;
}

}  // namespace diffuse::training
