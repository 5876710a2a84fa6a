// `diffuse timesteps sample|density|plot`: the training-time t distributions of the SD3 paper.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include <boost/hana/for_each.hpp>

#include "command.hpp"
#include "diffuse/eval/plot.hpp"
#include "diffuse/timesteps/any.hpp"
#include "diffuse/training/variants.hpp"

namespace diffuse::cli {
namespace {

struct TimestepsOptions {
  std::string dist = "logit_normal(0,1)";
  std::optional<double> shift;
  std::int64_t count = 1000;
  std::uint64_t seed = 0;
  int points = 99;
  std::string out;
};

// Writes to --out (atomically) or to stdout.
void emit(const std::string& out, const std::string& text) {
  if (out.empty()) {
    std::cout << text;
    return;
  }
  io::AtomicFileWriter w(out);
  w.write(text.data(), text.size());
  w.commit();
}

void run_sample(const TimestepsOptions& o) {
  if (o.count < 0) throw InputError("--count must be non-negative");
  const auto d = timesteps::parse_timesteps(o.dist, o.shift);
  auto gen = at::detail::createCPUGenerator(o.seed);
  const auto t = d.sample(o.count, gen);
  std::string text;
  char buf[40];
  const double* p = t.data_ptr<double>();
  for (std::int64_t i = 0; i < o.count; ++i) {
    std::snprintf(buf, sizeof buf, "%.17g\n", p[i]);
    text += buf;
  }
  emit(o.out, text);
}

void run_density(const TimestepsOptions& o) {
  if (o.points < 1) throw InputError("--points must be at least 1");
  const auto d = timesteps::parse_timesteps(o.dist, o.shift);
  std::string text;
  char buf[64];
  for (int i = 1; i <= o.points; ++i) {  // interior points t = i / (K + 1): the densities may diverge at 0 and 1
    const double t = static_cast<double>(i) / (o.points + 1);
    std::snprintf(buf, sizeof buf, "%.10g %.10g\n", t, d.density(t));
    text += buf;
  }
  emit(o.out, text);
}

void run_plot(const TimestepsOptions& o) {
  if (o.out.empty()) throw InputError("timesteps plot needs --out FILE.png");
  std::vector<double> grid;
  for (int i = 1; i < 400; ++i) grid.push_back(i / 400.0);

  eval::Panel densities{"training densities pi(t)", "t", "pi(t)", {}, 3.0};
  std::size_t k = 0;
  for (const char* spec : {"uniform", "logit_normal(0,1)", "logit_normal(1,0.6)", "logit_normal(-0.5,1)", "mode(1.29)",
                           "mode(-0.5)", "cosmap"}) {
    const auto d = timesteps::parse_timesteps(spec, o.shift);
    eval::Series s{d.describe(), grid, {}, eval::palette(k++)};
    for (double t : grid) s.y.push_back(d.density(t));
    densities.series.push_back(std::move(s));
  }

  // w_t spans orders of magnitude and several variants diverge at an end: plot log10 of w_t
  // normalised to its maximum on [0.02, 0.98], as the paper compares shapes, not scales.
  std::vector<double> inner;
  for (int i = 8; i <= 392; ++i) inner.push_back(i / 400.0);
  eval::Panel weights{"effective weighting w_t", "t", "log10(w_t / max w_t)", {}, 0.1, -3.0};
  k = 0;
  boost::hana::for_each(training::sd3_paper_variants(), [&](const auto& family) {
    const std::string f = family.family;
    for (const auto& v : family.variants) {
      const bool shown = f == "eps/linear" || f == "v/linear" || f == "eps/cos" || f == "v/cos" || f == "rf" ||
                         f == "rf/cosmap" || v.name == "rf/lognorm(0.00, 1.00)" || v.name == "rf/mode(1.29)" ||
                         v.name == "edm(-1.20, 1.20)";
      if (!shown) continue;
      eval::Series s{v.name, inner, {}, eval::palette(k++)};
      double mx = 0;
      for (double t : inner) {
        s.y.push_back(v.objective.effective_weight(t));
        if (std::isfinite(s.y.back())) mx = std::max(mx, s.y.back());
      }
      for (auto& y : s.y) y = std::log10(y / mx);
      weights.series.push_back(std::move(s));
    }
  });
  io::write_png(o.out, eval::render_plot({densities, weights}),
                {{"Software", "diffuse timesteps plot"}, {"Title", "SD3 timestep densities and weightings"}});
  std::cerr << "wrote " << o.out << "\n";
}

}  // namespace

void add_timesteps(CLI::App& app) {
  auto* cmd = app.add_subcommand("timesteps", "Sample, tabulate or plot the training-time timestep distributions");
  cmd->require_subcommand(1);
  auto o = std::make_shared<TimestepsOptions>();
  const std::string dist_help = "distribution: " + std::string(timesteps::timesteps_forms);
  auto add_common = [&](CLI::App* sub) {
    sub->add_option("--dist", o->dist, dist_help)->capture_default_str();
    sub->add_option("--shift", o->shift, "resolution shift alpha (t' = alpha t / (1 + (alpha - 1) t))");
    sub->add_option("--out", o->out, "write to this file instead of standard output");
  };
  auto* sample = cmd->add_subcommand("sample", "print one sampled t per line");
  add_common(sample);
  sample->add_option("--count", o->count, "number of samples")->capture_default_str();
  sample->add_option("--seed", o->seed, "random seed")->capture_default_str();
  sample->callback([o] { run_sample(*o); });

  auto* density = cmd->add_subcommand("density", "print 't density' pairs at K interior points");
  add_common(density);
  density->add_option("--points", o->points, "number of points K")->capture_default_str();
  density->callback([o] { run_density(*o); });

  auto* plot = cmd->add_subcommand("plot", "draw pi(t) and w_t of the SD3 paper's variants to a PNG");
  plot->add_option("--shift", o->shift, "apply this shift to the plotted densities");
  plot->add_option("--out", o->out, "PNG file to write")->required();
  plot->callback([o] { run_plot(*o); });
}

}  // namespace diffuse::cli
