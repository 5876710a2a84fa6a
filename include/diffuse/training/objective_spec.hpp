#pragma once
// An objective written as the SD3 paper's tables write it, "rf/lognorm(0.5, 0.6)" (process /
// timestep distribution with its numbers; "rf" alone is rf with uniform t), read into a
// compile-time objective type: the names must be the type's (else an InputError that says which
// typedef the spec needs), the numbers become the distribution's values.
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "diffuse/core/error.hpp"
#include "diffuse/timesteps/any.hpp"

namespace diffuse::training {

template <class Obj>
Obj objective_from_spec(std::string_view spec) {
  Obj o{};
  const auto slash = spec.find('/');
  const std::string process(spec.substr(0, slash));
  const std::string distribution(slash == std::string_view::npos ? std::string_view("uniform") : spec.substr(slash + 1));
  using Process = typename Obj::process_type;
  using Timesteps = typename Obj::timesteps_type;
  if (process != Process::name)
    throw InputError("objective '" + std::string(spec) + "': this pipeline's process is " + std::string(Process::name) +
                     " (the process is part of the typedef)");
  const auto t = timesteps::parse_timesteps(distribution);
  if constexpr (std::is_same_v<Timesteps, timesteps::AnyTimesteps>) {
    o.timesteps = t;
  } else {
    const auto* d = std::get_if<Timesteps>(&t.base);
    if (!d || t.shift)
      throw InputError("objective '" + std::string(spec) + "': this pipeline samples t from " + std::string(Timesteps::name) +
                       "; another distribution needs a typedef with it (or timesteps::AnyTimesteps)");
    o.timesteps = *d;
  }
  return o;
}

}  // namespace diffuse::training
