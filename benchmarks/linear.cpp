// Benchmark: nn/cpu_linear.hpp's two kernels (weights as stored, row-major, and laid out
// column-major: nn/linear_weight_layout.hpp) against LibTorch's addmm (the BLAS) on the SD3-medium
// token products at batch 1 (and the bf16 one-row adaLN product against oneDNN's), with a fresh
// weight for every call as in a forward (each of 6 copies is used once per round), in the same
// process, rounds alternating.
//   ./bench_linear [--rounds 8]
// OpenBLAS's threads spin for a while after each call and take the cores from the next one, so
// each addmm round is followed by a pause before the kernel's round.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <diffuse/core/runtime_tuning.hpp>
#include <diffuse/core/torch_compat.hpp>
#include <diffuse/nn/cpu_linear.hpp>

using clock_type = std::chrono::steady_clock;

int main(int argc, char** argv) {
  diffuse::tune_runtime(argv);
  int rounds = 8;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: %s [--rounds N]\n", argv[0]);
      return 2;
    }
  }
  const int threads = diffuse::configure_threads(0);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  struct Shape {
    const char* name;
    std::int64_t m, k, n;
  };
  // context (154 tokens) and image (256 tokens at 256x256) streams: qkv, proj, fc1, fc2
  const std::vector<Shape> shapes = {{"ctx qkv", 154, 1536, 4608}, {"ctx proj", 154, 1536, 1536},
                                     {"ctx fc1", 154, 1536, 6144}, {"ctx fc2", 154, 6144, 1536},
                                     {"img qkv", 256, 1536, 4608}, {"img proj", 256, 1536, 1536},
                                     {"img fc1", 256, 1536, 6144}, {"img fc2", 256, 6144, 1536},
                                     {"adaLN", 1, 1536, 9216}};
  if (!diffuse::nn::cpu_linear_applies(torch::randn({2, 2}), torch::randn({2, 2}))) {
    std::fprintf(stderr, "bench_linear: the kernel needs an x86-64 CPU with AVX-512\n");
    return 1;
  }
  constexpr int copies = 6;  // 6 x ~200 MB of weights a round: more than any cache
  std::printf("cpu_linear (row-major and column-major weights) vs addmm, %d threads, best of %d rounds (GFLOP/s)\n",
              threads, rounds);
  if (const auto note = diffuse::blas_baseline_note(); !note.empty()) std::printf("%s\n", note.c_str());
  double total_flops = 0, total[3] = {0, 0, 0};
  for (const auto& s : shapes) {
    const auto x = torch::randn({s.m, s.k});
    std::vector<torch::Tensor> w, wc, b;
    for (int c = 0; c < copies; ++c) {
      w.push_back(torch::randn({s.n, s.k}) * 0.02), b.push_back(torch::randn({s.n}));
      wc.push_back(w.back().t().contiguous().t());  // the same weight, column-major
    }
    double best[3] = {1e30, 1e30, 1e30};
    for (int r = 0; r < rounds; ++r)
      for (int v = 0; v < 3; ++v) {
        const auto t0 = clock_type::now();
        for (int c = 0; c < copies; ++c) {
          const auto y = v == 0   ? torch::addmm(b[c], x, w[c].t())
                         : v == 1 ? diffuse::nn::cpu_linear(x, w[c], b[c])
                                  : diffuse::nn::cpu_linear(x, wc[c], b[c]);
        }
        best[v] = std::min(best[v], std::chrono::duration<double>(clock_type::now() - t0).count() / copies);
        if (v == 0) usleep(300000);
      }
    const double flops = 2.0 * s.m * s.k * s.n;
    std::printf("%-9s %4lld x %4lld x %4lld  addmm %6.1f  row-major %6.1f (%.2fx)  column-major %6.1f (%.2fx)\n", s.name,
                (long long)s.m, (long long)s.k, (long long)s.n, flops / best[0] / 1e9, flops / best[1] / 1e9,
                best[0] / best[1], flops / best[2] / 1e9, best[0] / best[2]);
    total_flops += flops;
    for (int v = 0; v < 3; ++v) total[v] += best[v];
  }
  std::printf("all shapes, one of each: addmm %.1f  row-major %.1f (%.2fx)  column-major %.1f GFLOP/s (%.2fx)\n",
              total_flops / total[0] / 1e9, total_flops / total[1] / 1e9, total[0] / total[1],
              total_flops / total[2] / 1e9, total[0] / total[2]);

  // The one-row adaLN product in bfloat16: oneDNN's addmm against the kernel's pass over the bf16
  // weight (what a bf16 forward runs 49 times at SD3-medium), in GB/s of weight read.
  {
    const std::int64_t k = 1536, n = 9216;
    const auto x = torch::randn({1, k}).to(torch::kBFloat16);
    std::vector<torch::Tensor> w, b;
    for (int c = 0; c < copies; ++c)
      w.push_back((torch::randn({n, k}) * 0.02).to(torch::kBFloat16)), b.push_back(torch::randn({n}).to(torch::kBFloat16));
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < rounds; ++r)
      for (int v = 0; v < 2; ++v) {
        const auto t0 = clock_type::now();
        for (int c = 0; c < copies; ++c) {
          const auto y = v == 0 ? torch::addmm(b[c], x, w[c].t()) : diffuse::nn::cpu_linear(x, w[c], b[c]);
        }
        best[v] = std::min(best[v], std::chrono::duration<double>(clock_type::now() - t0).count() / copies);
      }
    const double bytes = 2.0 * k * n;
    std::printf("adaLN bf16  1 x %lld x %lld  addmm %.1f GB/s  cpu_linear %.1f GB/s (%.2fx)\n", (long long)k,
                (long long)n, bytes / best[0] / 1e9, bytes / best[1] / 1e9, best[0] / best[1]);
  }
  return 0;
}
