#pragma once
// The SD3 paper's comparison of objectives (section 5.1, Table 1 and Figure 3), as a compile-time
// list: one Boost.Hana tuple entry per objective *type*, each with the runtime parameter values the
// paper sweeps (numbers are values, so the sweep needs no new instantiations).
#include <string>
#include <vector>

#include <boost/hana/tuple.hpp>

#include "diffuse/process/cosine.hpp"
#include "diffuse/process/edm.hpp"
#include "diffuse/process/ldm_linear.hpp"
#include "diffuse/process/rectified_flow.hpp"
#include "diffuse/timesteps/cosmap.hpp"
#include "diffuse/timesteps/logit_normal.hpp"
#include "diffuse/timesteps/mode_heavy_tails.hpp"
#include "diffuse/timesteps/uniform.hpp"
#include "diffuse/training/objective.hpp"
#include "diffuse/weighting/weighting.hpp"

namespace diffuse::training {

template <class Obj>
struct Variant {
  std::string name;  // as the paper writes it, e.g. "rf/lognorm(0.00, 1.00)"
  Obj objective;
};

// All variants of one objective type.
template <class Obj>
struct VariantFamily {
  std::string family;  // "eps/linear", "rf/mode", ...
  std::vector<Variant<Obj>> variants;
};

namespace variants {
namespace p = diffuse::process;
namespace ts = diffuse::timesteps;
namespace w = diffuse::weighting;
using EpsLinear = Objective<p::LDMLinear, ts::Uniform, w::Uniform, p::Eps>;
using VLinear = Objective<p::LDMLinear, ts::Uniform, w::Uniform, p::V>;
using EpsCos = Objective<p::Cosine, ts::Uniform, w::Uniform, p::Eps>;
using VCos = Objective<p::Cosine, ts::Uniform, w::Uniform, p::V>;
using RF = Objective<p::RectifiedFlow, ts::Uniform, w::Uniform>;
using RFMode = Objective<p::RectifiedFlow, ts::ModeHeavyTails, w::Uniform>;
using RFLogNorm = Objective<p::RectifiedFlow, ts::LogitNormal, w::Uniform>;
using RFCosMap = Objective<p::RectifiedFlow, ts::CosMap, w::Uniform>;
using EDMLogNorm = Objective<p::EDM<p::edm::LogNormalSigma>, ts::Uniform, w::EDM, p::X0>;
using EDMRF = Objective<p::EDM<p::edm::RFSigma>, ts::Uniform, w::EDM, p::X0>;
using EDMCos = Objective<p::EDM<p::edm::CosineSigma>, ts::Uniform, w::EDM, p::X0>;

inline std::string fmt2(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}
}  // namespace variants

// The catalogue. rf/mode: s in {-1, -0.5, 0, 0.5, 1, 1.29, 1.5, 1.75}; rf/lognorm: m in
// {-1, -0.5, 0, 0.5, 1} x s in {0.6, 1.0}; edm: (P_m, P_s) in {(-1.2, 1.2), (0, 0.6), (-0.5, 1)}.
inline auto sd3_paper_variants() {
  using namespace variants;
  VariantFamily<RFMode> mode{"rf/mode", {}};
  for (double s : {-1.0, -0.5, 0.0, 0.5, 1.0, 1.29, 1.5, 1.75})
    mode.variants.push_back({"rf/mode(" + fmt2(s) + ")", RFMode{{}, ts::ModeHeavyTails(s), {}}});
  VariantFamily<RFLogNorm> lognorm{"rf/lognorm", {}};
  for (double m : {-1.0, -0.5, 0.0, 0.5, 1.0})
    for (double s : {0.6, 1.0})
      lognorm.variants.push_back({"rf/lognorm(" + fmt2(m) + ", " + fmt2(s) + ")", RFLogNorm{{}, {m, s}, {}}});
  VariantFamily<EDMLogNorm> edm{"edm", {}};
  for (auto [pm, ps] : {std::pair{-1.2, 1.2}, std::pair{0.0, 0.6}, std::pair{-0.5, 1.0}})
    edm.variants.push_back({"edm(" + fmt2(pm) + ", " + fmt2(ps) + ")", EDMLogNorm{{{pm, ps}, 0.5}, {}, {}}});
  return boost::hana::make_tuple(
      VariantFamily<EpsLinear>{"eps/linear", {{"eps/linear", {}}}},
      VariantFamily<VLinear>{"v/linear", {{"v/linear", {}}}},
      VariantFamily<EpsCos>{"eps/cos", {{"eps/cos", {}}}},
      VariantFamily<VCos>{"v/cos", {{"v/cos", {}}}},
      VariantFamily<RF>{"rf", {{"rf", {}}}},
      mode, lognorm,
      VariantFamily<RFCosMap>{"rf/cosmap", {{"rf/cosmap", {}}}},
      edm,
      VariantFamily<EDMRF>{"edm/rf", {{"edm/rf", {}}}},
      VariantFamily<EDMCos>{"edm/cos", {{"edm/cos", {}}}});
}

}  // namespace diffuse::training
