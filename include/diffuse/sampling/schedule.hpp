#pragma once
// Sigma schedules for flow sampling (torch-free): each returns N + 1 sigmas, descending, ending in 0.
// For rectified flow sigma = t. With shift s, f_s(t) = s t / (1 + (s - 1) t) (SD3 eq. 23).
//   ReferenceSchedule: the SD3.5 reference / diffusers (SD3_FACTS (d) 13): sigma_j = f_s(j / 1000)
//     for j = 1..1000; timesteps = linspace(1000, 1000 f_s(0.001), N); sigma = f_s(timesteps / 1000),
//     so the shift acts twice at the low end (last non-zero sigma ~0.0089 for N = 28, s = 3).
//   ShiftedLinear: sigma_i = f_s(1 - i / N) (candle; a large last step, ~0.10 for N = 28).
//   SdCppSchedule: stable-diffusion.cpp, sigma = f_s((t + 1) / 1000), t = linspace(999, 0, N) (last ~0.003).
//   DynamicShift: Flux/diffusers resolution-dependent shift, sigma' = e^mu / (e^mu + 1/sigma - 1) on
//     sigma = linspace(1, 1/N, N), mu linear in the image token count (0.5 at 256 tokens, 1.15 at 4096).
//   CustomSigmas: a user-given list (a final 0 is appended when missing).
#include <cmath>
#include <string>
#include <vector>

#include "diffuse/core/error.hpp"

namespace diffuse::sampling {

inline double shift_sigma(double s, double t) { return s * t / (1.0 + (s - 1.0) * t); }

inline void check_steps(int steps) {
  if (steps < 1) throw InputError("sampling: steps must be at least 1, got " + std::to_string(steps));
}

inline std::vector<double> linspace(double a, double b, int n) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[i] = n == 1 ? a : a + (b - a) * i / (n - 1);
  return v;
}

// In float32 and in the reference's order of operations, so that its sigmas (a torch.FloatTensor)
// and the timesteps 1000 sigma the MM-DiT sees are bit for bit the reference's: the timestep
// embedding's highest frequencies turn one ulp of t (6e-5 at t ~ 750) into differences far above
// float32 rounding elsewhere (docs/reference_parity.md). torch.linspace computes start + step * i
// for the first half and end - step * (n - 1 - i) for the rest, each as one fused multiply-add in
// its CPU kernel (PyTorch 1.13's AVX2 build also has a vector path for n >= 16, which can differ
// from this in the last bit).
struct ReferenceSchedule {
  static constexpr const char* name = "reference";
  double shift = 3.0;
  std::vector<double> sigmas(int steps) const {
    check_steps(steps);
    const float s = static_cast<float>(shift);
    // ModelSamplingDiscreteFlow.sigma: t / 1000, then s t / (1 + (s - 1) t), each op rounded.
    const auto sigma_of = [s](float timestep) {
      const float t = timestep / 1000.0f;
      if (s == 1.0f) return t;
      const float num = s * t;
      const float scaled = (s - 1.0f) * t;
      const float den = 1.0f + scaled;
      return num / den;
    };
    const float start = sigma_of(1000.0f) * 1000.0f, end = sigma_of(1.0f) * 1000.0f;  // timestep(sigma_max / _min)
    std::vector<double> out;
    if (steps == 1) {
      out.push_back(sigma_of(start));
    } else {
      const float step = (end - start) / static_cast<float>(steps - 1);
      for (int i = 0; i < steps; ++i) {
        const float ts = i < steps / 2 ? std::fmaf(step, static_cast<float>(i), start)
                                       : std::fmaf(-step, static_cast<float>(steps - 1 - i), end);
        out.push_back(sigma_of(ts));
      }
    }
    out.push_back(0.0);
    return out;
  }
};

struct ShiftedLinear {
  static constexpr const char* name = "linear";
  double shift = 3.0;
  std::vector<double> sigmas(int steps) const {
    check_steps(steps);
    std::vector<double> out;
    for (int i = 0; i < steps; ++i) out.push_back(shift_sigma(shift, 1.0 - static_cast<double>(i) / steps));
    out.push_back(0.0);
    return out;
  }
};

struct SdCppSchedule {
  static constexpr const char* name = "sdcpp";
  double shift = 3.0;
  std::vector<double> sigmas(int steps) const {
    check_steps(steps);
    std::vector<double> out;
    for (double t : linspace(999.0, 0.0, steps)) out.push_back(shift_sigma(shift, (t + 1.0) / 1000.0));
    out.push_back(0.0);
    return out;
  }
};

struct DynamicShift {
  static constexpr const char* name = "dynamic";
  double image_tokens = 4096;
  double base_shift = 0.5, max_shift = 1.15, base_tokens = 256, max_tokens = 4096;
  double mu() const {
    return base_shift + (max_shift - base_shift) * (image_tokens - base_tokens) / (max_tokens - base_tokens);
  }
  std::vector<double> sigmas(int steps) const {
    check_steps(steps);
    const double e = std::exp(mu());
    std::vector<double> out;
    for (double s : linspace(1.0, 1.0 / steps, steps)) out.push_back(e / (e + (1.0 / s - 1.0)));
    out.push_back(0.0);
    return out;
  }
};

struct CustomSigmas {
  static constexpr const char* name = "custom";
  std::vector<double> values;
  std::vector<double> sigmas(int) const {
    if (values.empty()) throw InputError("sampling: the custom sigma list is empty");
    for (std::size_t i = 1; i < values.size(); ++i)
      if (!(values[i] < values[i - 1])) throw InputError("sampling: custom sigmas must be strictly decreasing");
    if (values.back() < 0) throw InputError("sampling: sigmas must be non-negative");
    auto out = values;
    if (out.back() != 0.0) out.push_back(0.0);
    return out;
  }
};

}  // namespace diffuse::sampling
