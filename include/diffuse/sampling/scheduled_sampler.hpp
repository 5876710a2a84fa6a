#pragma once
// The sampler slot of a pipeline: an integration method (Euler, Heun, DPM++ 2M, ...) with a sigma
// schedule (schedule.hpp), e.g. `ScheduledSampler<Euler, ShiftedLinear>` for the SD3 paper's Euler
// with shift. The shift is a value of the schedule, not of the type.
#include <string>
#include <vector>

#include "diffuse/sampling/sampler.hpp"
#include "diffuse/sampling/schedule.hpp"

namespace diffuse::sampling {

template <class S>
concept SigmaSchedule = requires(const S& s, int steps) {
  { s.sigmas(steps) } -> std::same_as<std::vector<double>>;
  { S::name };
};

template <Sampler Method, SigmaSchedule Schedule>
struct ScheduledSampler {
  using method_type = Method;
  using schedule_type = Schedule;
  Method method{};
  Schedule schedule{};

  std::string name() const { return std::string(Method::name) + "/" + Schedule::name; }
  SampleResult sample(const Denoiser& d, const torch::Tensor& noise, int steps, const StepCallback& cb = {}) const {
    return method.sample(d, noise, schedule.sigmas(steps), cb);
  }
};

}  // namespace diffuse::sampling
