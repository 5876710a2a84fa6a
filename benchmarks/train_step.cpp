// Benchmark: the shapes model's training step (the main job's inner loop), images/s and achieved
// FLOP/s (matrix products: 3x the forward's, for forward + backward), next to this machine's GEMM
// FLOP/s at the step's typical product shape measured in the same run, in f32 and bf16.
//   ./bench_train_step [--steps 30] [--batch B (default: the config's)] [--config FILE]
//                      [--precision f32|bf16 (default: both)]
//                      [--workers 1,2 (default: 1 and one per usable core: the batch on one thread
//                       against the batch split over worker threads, training/shard_pool.hpp)]
//                      [--profile trace.json]   (a Chrome trace of 5 profiled steps of each precision
//                       run, trace.json.<precision>; scripts/profile_summary.py adds up self time
//                       per operator and phase)
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <torch/csrc/autograd/profiler_legacy.h>

#include <diffuse/backbone/mmdit_flops.hpp>
#include <diffuse/core/runtime_tuning.hpp>
#include <diffuse/core/torch_compat.hpp>
#include <diffuse/pipeline/pipeline.hpp>
#include <diffuse/training/trainer.hpp>

using namespace diffuse;
using clock_type = std::chrono::steady_clock;

double gemm_flops(torch::ScalarType dtype, std::int64_t m, std::int64_t k, std::int64_t n) {
  const auto a = torch::randn({m, k}).to(dtype), b = torch::randn({k, n}).to(dtype);
  auto c = torch::empty({m, n}, dtype);
  at::mm_out(c, a, b);
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = clock_type::now();
    for (int i = 0; i < 5; ++i) at::mm_out(c, a, b);
    best = std::min(best, std::chrono::duration<double>(clock_type::now() - t0).count() / 5);
  }
  return 2.0 * m * k * n / best;
}

int main(int argc, char** argv) {
  diffuse::tune_runtime(argv);
  int steps = 30, batch = 0;  // 0: the config's batch
  std::string config, profile, only;  // only: one precision instead of both
  std::vector<int> worker_counts;
  bool unknown = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--steps") steps = std::stoi(next());
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--config") config = next();
    else if (a == "--profile") profile = next();
    else if (a == "--precision") only = next();
    else if (a == "--workers") {
      std::istringstream list(next());
      for (std::string w; std::getline(list, w, ',');) {
        worker_counts.push_back(w.empty() ? 0 : std::atoi(w.c_str()));
        if (worker_counts.back() < 1) unknown = true;
      }
    } else unknown = true;
    if (unknown || (!only.empty() && only != "f32" && only != "bf16")) {
      std::fprintf(stderr, "usage: %s [--steps N] [--batch B] [--config TrainConfig.json] [--precision f32|bf16] [--workers 1,2] "
                   "[--profile trace.json]\n",
                   argv[0]);
      return 2;
    }
  }
  const int threads = configure_threads();
  if (worker_counts.empty()) {
    worker_counts.push_back(1);
    if (threads > 1) worker_counts.push_back(threads);
  }
  const auto dir = std::filesystem::temp_directory_path() / ("diffuse-bench-train-" + std::to_string(::getpid()));
  auto base = config.empty() ? training::TrainConfig::shapes_default()
                             : load_config<training::TrainConfig>(config, training::TrainConfig::shapes_default());
  if (batch > 0) base.batch = batch;
  batch = base.batch;
  std::printf("training step of the shapes model, batch %d, %d threads, %d timed steps after 5 warm-up steps\n", batch, threads, steps);
  std::printf("%-6s %8s %10s %10s %14s %14s %8s\n", "dtype", "workers", "step ms", "img/s", "model GFLOP/s", "GEMM GFLOP/s", "ratio");
  for (const char* precision : {"f32", "bf16"}) {
    if (!only.empty() && only != precision) continue;
    for (const int workers : worker_counts) {
      auto c = base;
      c.precision = precision;
      c.workers = workers;
      const auto run_dir = dir / (std::string(precision) + "-" + std::to_string(workers));
      training::Trainer<pipeline::SD3PixelRecipe> t(run_dir, c, false);
      const auto& m = t.model()->config();
      const std::int64_t tokens = (c.image_size / m.patch) * (c.image_size / m.patch), ctx = c.text.length;
      const double flops_per_image = 3.0 * backbone::mmdit_forward_flops(m, tokens, ctx);
      for (int i = 0; i < 5; ++i) t.train_step();
      const auto t0 = clock_type::now();
      for (int i = 0; i < steps; ++i) t.train_step();
      const double s = std::chrono::duration<double>(clock_type::now() - t0).count() / steps;
      const double gemm = gemm_flops(std::string(precision) == "bf16" ? torch::kBFloat16 : torch::kFloat32,
                                     batch * (tokens + ctx), m.hidden_size(), m.mlp_hidden());
      const double achieved = flops_per_image * batch / s;
      std::printf("%-6s %8d %10.1f %10.0f %14.1f %14.1f %7.0f%%\n", precision, workers, s * 1e3, batch / s, achieved / 1e9,
                  gemm / 1e9, 100 * achieved / gemm);
      if (!profile.empty()) {
        torch::autograd::profiler::RecordProfile guard(profile + "." + precision + "-" + std::to_string(workers));
        for (int i = 0; i < 5; ++i) t.train_step();
      }
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
