#pragma once
// A timestep distribution chosen at run time, for the command line and config files. The
// library's typedefs fix the distribution's type at compile time; this is the one place where a
// name is turned into a distribution, and an unknown name or a bad argument is an InputError
// that lists the accepted forms (no silent fallback).
//
// Forms (as the SD3 paper writes them): uniform, logit_normal(m,s), mode(s), cosmap, edm(pm,ps);
// a shift alpha wraps any of them (Shifted<D>).
#include <cctype>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "diffuse/timesteps/cosmap.hpp"
#include "diffuse/timesteps/edm_lognormal.hpp"
#include "diffuse/timesteps/logit_normal.hpp"
#include "diffuse/timesteps/mode_heavy_tails.hpp"
#include "diffuse/timesteps/shift.hpp"
#include "diffuse/timesteps/uniform.hpp"

namespace diffuse::timesteps {

struct AnyTimesteps {
  static constexpr std::string_view name = "any";
  std::variant<Uniform, LogitNormal, ModeHeavyTails, CosMap, EDMLogNormal> base;
  std::optional<Shift> shift;

  template <class T> T density(const T& t) const {
    return std::visit(
        [&](const auto& d) -> T {
          if (!shift) return d.density(t);
          return T(d.density(shift->inverse(t)) * shift->dinverse(t));
        },
        base);
  }
  double cdf(double t) const {
    return std::visit([&](const auto& d) { return d.cdf(shift ? shift->inverse(t) : t); }, base);
  }
  torch::Tensor sample(std::int64_t n, at::Generator& gen) const {
    return std::visit(
        [&](const auto& d) {
          auto s = d.sample(n, gen);
          return shift ? (*shift)(s) : s;
        },
        base);
  }
  std::string describe() const {
    const auto b = std::visit([](const auto& d) { return d.describe(); }, base);
    return shift ? "shift(" + detail::num(shift->alpha) + ")*" + b : b;
  }
};

inline constexpr std::string_view timesteps_forms = "uniform, logit_normal(m,s), mode(s), cosmap, edm(pm,ps)";

// Parses e.g. "logit_normal(0, 1)"; `shift` (alpha > 0) wraps the result.
inline AnyTimesteps parse_timesteps(std::string_view spec, std::optional<double> shift = std::nullopt) {
  std::string s;
  for (char c : spec)
    if (!std::isspace(static_cast<unsigned char>(c))) s.push_back(c);
  std::string head = s;
  std::vector<double> args;
  if (const auto open = s.find('('); open != std::string::npos) {
    if (s.back() != ')') throw InputError("timesteps '" + std::string(spec) + "': missing ')'");
    head = s.substr(0, open);
    std::string inner = s.substr(open + 1, s.size() - open - 2);
    std::size_t pos = 0;
    while (!inner.empty()) {
      const auto comma = inner.find(',', pos);
      const std::string tok = inner.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      std::size_t used = 0;
      double v = 0;
      try {
        v = std::stod(tok, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (tok.empty() || used != tok.size())
        throw InputError("timesteps '" + std::string(spec) + "': '" + tok + "' is not a number");
      args.push_back(v);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  auto need = [&](std::size_t n, const char* what) {
    if (args.size() != n)
      throw InputError("timesteps '" + std::string(spec) + "': " + head + " takes " + what + ", got " +
                       std::to_string(args.size()) + " argument(s)");
  };
  auto positive = [&](double v, const char* what) {
    if (!(v > 0)) throw InputError("timesteps '" + std::string(spec) + "': " + what + " must be positive");
  };
  AnyTimesteps out{Uniform{}, std::nullopt};
  if (head == "uniform") {
    need(0, "no arguments");
  } else if (head == "logit_normal" || head == "lognorm") {
    need(2, "(m, s)");
    positive(args[1], "s");
    out.base = LogitNormal{args[0], args[1]};
  } else if (head == "mode") {
    need(1, "(s)");
    out.base = ModeHeavyTails(args[0]);
  } else if (head == "cosmap") {
    need(0, "no arguments");
    out.base = CosMap{};
  } else if (head == "edm") {
    need(2, "(pm, ps)");
    positive(args[1], "ps");
    out.base = EDMLogNormal{args[0], args[1]};
  } else {
    throw InputError("timesteps '" + std::string(spec) + "': unknown distribution '" + head + "' (expected " +
                     std::string(timesteps_forms) + ")");
  }
  if (shift) {
    positive(*shift, "the shift");
    out.shift = Shift{*shift};
  }
  return out;
}

}  // namespace diffuse::timesteps
