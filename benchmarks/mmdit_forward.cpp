// Benchmark: MM-DiT forward (and forward + backward) time and achieved FLOP/s, next to the GEMM
// FLOP/s of this machine measured in the same run and dtype (the ratio is the figure that matters
// on a shared machine).
//   ./bench_mmdit [--config small|sd3-medium] [--size 256] [--dtype f32|bf16|both] [--backward] [--repeats 3] [--threads N]
//                 [--layout row|column|both]   (float32 Linear weights as stored, column-major, or
//                                              both in turn: nn/linear_weight_layout.hpp; bf16 runs row-major)
//                 [--profile trace.json]   (a Chrome trace of one more forward in the last dtype run;
//                                           scripts/profile_summary.py adds up self time per operator)
// Each forward line ends with the minor page faults of one more forward: a steady state near 0
// says fresh activations come from the allocator's reuse, not from the kernel's zeroed pages.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include <sys/resource.h>

#include <torch/csrc/autograd/profiler_legacy.h>

#include <diffuse/core/runtime_tuning.hpp>
#include <diffuse/backbone/mmdit.hpp>
#include <diffuse/backbone/mmdit_flops.hpp>
#include <diffuse/core/torch_compat.hpp>
#include <diffuse/nn/linear_weight_layout.hpp>

using namespace diffuse;
using clock_type = std::chrono::steady_clock;

template <class F>
double best_seconds(int repeats, F&& f) {
  f();  // warm-up
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = clock_type::now();
    f();
    best = std::min(best, std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  return best;
}

// Minor page faults of this process so far: fresh activation buffers that the allocator takes from
// the kernel cost a fault and a zeroed page each, which shows up as time in whatever op touches them.
long minor_faults() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// GEMM throughput of (m x k) @ (k x n).
double gemm_flops(torch::ScalarType dtype, std::int64_t m, std::int64_t k, std::int64_t n, int repeats) {
  const auto a = torch::randn({m, k}).to(dtype), b = torch::randn({k, n}).to(dtype);
  auto c = torch::empty({m, n}, dtype);
  const double s = best_seconds(repeats, [&] { at::mm_out(c, a, b); });
  return 2.0 * m * k * n / s;
}

int main(int argc, char** argv) {
  diffuse::tune_runtime(argv);  // DIFFUSE_NO_TUNE=1 measures the untuned baseline
  std::string config_name = "sd3-medium", dtype_name = "both", layout_name = "both", profile;
  int size = 256, repeats = 3, threads = 0;
  bool backward = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--config") config_name = next();
    else if (a == "--size") size = std::stoi(next());
    else if (a == "--dtype") dtype_name = next();
    else if (a == "--backward") backward = true;
    else if (a == "--repeats") repeats = std::stoi(next());
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--profile") profile = next();
    else if (a == "--layout") layout_name = next();
    else {
      std::fprintf(stderr, "usage: %s [--config small|sd3-medium] [--size PIXELS] [--dtype f32|bf16|both] [--backward] [--repeats N] [--threads N] [--layout row|column|both] [--profile trace.json]\n", argv[0]);
      return 2;
    }
  }
  if (layout_name != "row" && layout_name != "column" && layout_name != "both") {
    std::fprintf(stderr, "--layout must be row, column or both\n");
    return 2;
  }
  threads = configure_threads(threads);
  backbone::MMDiTConfig cfg = config_name == "small" ? backbone::MMDiTConfig::scaling(4) : backbone::MMDiTConfig::sd3_medium();
  if (config_name == "small") cfg.context_in = 256, cfg.adm_in = 256;
  const std::int64_t latent = size / 8, tokens = (latent / cfg.patch) * (latent / cfg.patch), ctx = 154;
  const double flops = backbone::mmdit_forward_flops(cfg, tokens, ctx);
  std::printf("MM-DiT %s (depth %d, hidden %d), %dx%d pixels = %lld image + %lld context tokens, batch 1, %d threads\n",
              config_name.c_str(), cfg.depth, cfg.hidden_size(), size, size, (long long)tokens, (long long)ctx, threads);
  std::printf("forward: %.1f GFLOP (matrix products)\n", flops / 1e9);
  if (const auto note = diffuse::blas_baseline_note(); !note.empty()) std::printf("%s\n", note.c_str());

  torch::manual_seed(0);
  backbone::MMDiT model(cfg);
  struct Run {
    torch::ScalarType dtype;
    nn::WeightLayout layout;
    const char* name;
  };
  for (const auto& run : {Run{torch::kFloat32, nn::WeightLayout::RowMajor, "f32"},
                          Run{torch::kFloat32, nn::WeightLayout::ColumnMajor, "f32 column-major"},
                          Run{torch::kBFloat16, nn::WeightLayout::RowMajor, "bf16"}}) {
    const auto dtype = run.dtype;
    const std::string dn = run.name;
    const bool column = run.layout == nn::WeightLayout::ColumnMajor;
    if (dtype_name != "both" && dn.rfind(dtype_name, 0) != 0) continue;
    if (dtype == torch::kFloat32 && layout_name != "both" && (layout_name == "column") != column) continue;
    model->to(dtype);
    nn::set_linear_weight_layout(*model, run.layout);
    const auto x = torch::randn({1, 16, latent, latent}).to(dtype), t = torch::tensor({500.0f});
    const auto y = torch::randn({1, cfg.adm_in}).to(dtype), c = torch::randn({1, ctx, cfg.context_in}).to(dtype);
    // The machine's GEMM rate in this dtype: the best of the model's own MLP shape and a square-ish
    // 1024 x 1536 x 6144 product (some token counts hit slow kernel paths, e.g. bf16 at 1178 rows).
    // Measured before and after the forward, the best of at least 10 products each time: on a shared
    // host one short measurement can land in a busy moment and flatter the ratio (seen: bf16 83 vs
    // 167 GFLOP/s in consecutive runs).
    const int gemm_repeats = std::max(repeats, 10);
    const auto gemm_rate = [&] {
      return std::max(gemm_flops(dtype, tokens + ctx, cfg.hidden_size(), cfg.mlp_hidden(), gemm_repeats),
                      gemm_flops(dtype, 1024, cfg.hidden_size(), cfg.mlp_hidden(), gemm_repeats));
    };
    const double gemm_before = gemm_rate();
    const double fwd = best_seconds(repeats, [&] {
      torch::NoGradGuard g;
      model->forward(x, t, y, c);
    });
    const long faults_before = minor_faults();
    {
      torch::NoGradGuard g;
      model->forward(x, t, y, c);
    }
    const long faults = minor_faults() - faults_before;
    const double gemm = std::max(gemm_before, gemm_rate());
    std::printf("%-5s GEMM %.1f GFLOP/s | forward %.3f s = %.1f GFLOP/s = %.0f%% of GEMM | %ld page faults\n", dn.c_str(),
                gemm / 1e9, fwd, flops / fwd / 1e9, 100 * flops / fwd / gemm, faults);
    if (!profile.empty()) {
      torch::autograd::profiler::RecordProfile guard(profile);
      torch::NoGradGuard g;
      model->forward(x, t, y, c);
    }
    if (backward) {
      const double fb = best_seconds(repeats, [&] {
        model->zero_grad();
        model->forward(x, t, y, c).square().mean().backward();
      });
      std::printf("%-5s forward+backward %.3f s = %.1f GFLOP/s (3x forward FLOPs) = %.0f%% of GEMM\n", dn.c_str(), fb,
                  3 * flops / fb / 1e9, 100 * 3 * flops / fb / gemm);
    }
  }
  return 0;
}
