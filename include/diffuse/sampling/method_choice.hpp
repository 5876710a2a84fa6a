#pragma once
// One of a compile-time list of integration methods, chosen by name once (from a request or a
// model's defaults) and then called directly: `MethodChoice<std::tuple<Euler, Heun, DPMPP2M>>`.
// The list is a type, so a program that wants another method adds it there; a name outside the
// list is an InputError that lists the names.
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "diffuse/core/error.hpp"
#include "diffuse/sampling/sampler.hpp"

namespace diffuse::sampling {

template <class Methods>
class MethodChoice {
  static_assert(sizeof(Methods) == 0, "MethodChoice: expected a std::tuple of samplers, e.g. std::tuple<Euler, DPMPP2M>");
};

template <Sampler... M>
class MethodChoice<std::tuple<M...>> {
  static_assert(sizeof...(M) > 0, "MethodChoice: the list of samplers is empty");

 public:
  explicit MethodChoice(const std::string& name) {
    if (!(pick<M>(name) || ...)) throw InputError("sampler must be one of " + names() + ", got '" + name + "'");
  }
  static std::string names() {
    std::string out;
    ((out += (out.empty() ? "" : ", ") + std::string(M::name)), ...);
    return out;
  }
  std::string name() const {
    return std::visit([](const auto& m) { return std::string(std::decay_t<decltype(m)>::name); }, method_);
  }
  SampleResult sample(const Denoiser& d, torch::Tensor x, const std::vector<double>& sigmas, const StepCallback& cb = {}) const {
    return std::visit([&](const auto& m) { return m.sample(d, std::move(x), sigmas, cb); }, method_);
  }

 private:
  template <class X>
  bool pick(const std::string& name) {
    if (name != X::name) return false;
    method_ = X{};
    return true;
  }
  std::variant<M...> method_;
};

}  // namespace diffuse::sampling
