#pragma once
// Which objectives make sense, checked at compile time with messages that name the slot and the
// fix (STYLE.md: a primary template that only static_asserts). Slots of
// Objective<Process, Timesteps, Weighting, Target>:
//   1 Process   (process/): RectifiedFlow, FlowMatching, LDMLinear, Cosine, EDM<...>
//   2 Timesteps (timesteps/): Uniform, LogitNormal, ModeHeavyTails, CosMap, EDMLogNormal, Shifted<...>
//   3 Weighting (weighting/): Uniform, EDM
//   4 Target    (process/target.hpp): Eps, X0, Velocity, V (default: the process's own)
#include <type_traits>

#include "diffuse/process/edm.hpp"
#include "diffuse/process/process.hpp"
#include "diffuse/process/target.hpp"
#include "diffuse/timesteps/distribution.hpp"
#include "diffuse/weighting/weighting.hpp"

namespace diffuse::training {

template <class P> struct is_edm_process : std::false_type {};
template <class S> struct is_edm_process<process::EDM<S>> : std::true_type {};

template <class P, class D, class W, class Tg>
consteval bool check_objective() {
  static_assert(process::ForwardProcess<P>,
                "Objective slot 1 (Process): not a forward process. It needs a(t), b(t), da(t), db(t), a name, "
                "variance_preserving and default_target; use one of diffuse::process:: RectifiedFlow, "
                "FlowMatching, LDMLinear, Cosine, EDM<> (docs/policies.md)");
  static_assert(timesteps::TimestepDistribution<D>,
                "Objective slot 2 (Timesteps): not a timestep distribution. It needs density(t), cdf(t), "
                "sample(n, gen), describe() and a name; use one of diffuse::timesteps:: Uniform, LogitNormal, "
                "ModeHeavyTails, CosMap, EDMLogNormal, Shifted<D>");
  static_assert(process::PredictionTarget<Tg>,
                "Objective slot 4 (Target): not a prediction target; use diffuse::process:: Eps, X0, Velocity or V");
  if constexpr (process::ForwardProcess<P> && process::PredictionTarget<Tg>) {
    static_assert(weighting::LossWeightingFor<W, P>,
                  "Objective slot 3 (Weighting): not a loss weighting for this process; use "
                  "diffuse::weighting::Uniform, or weighting::EDM with an EDM process");
    static_assert(!std::is_same_v<Tg, process::V> || P::variance_preserving,
                  "Objective slot 4 (Target): V (v-prediction, Salimans & Ho) is defined for variance-preserving "
                  "processes (a^2 + b^2 = 1: LDMLinear, Cosine); with RectifiedFlow or FlowMatching use Velocity");
    static_assert(!std::is_same_v<W, weighting::EDM> || is_edm_process<P>::value,
                  "Objective slot 3 (Weighting): weighting::EDM reads sigma_data from an EDM process; use "
                  "Objective<process::EDM<...>, timesteps::Uniform, weighting::EDM, process::X0>, or "
                  "weighting::Uniform with this process");
    static_assert(!std::is_same_v<W, weighting::EDM> || std::is_same_v<Tg, process::X0>,
                  "Objective slot 4 (Target): weighting::EDM weights the x0 error (Karras et al. 2022); use "
                  "process::X0 as the target");
  }
  return true;
}

}  // namespace diffuse::training
