// Benchmark: the gradient sum of a data-parallel run (training/process_group.hpp: Gloo, buckets of
// 25 MiB) between the ranks of `diffuse launch`, for buffer sizes from a few KiB to the gradients of
// large models. Rank 0 prints each size's median time over the repeats, the algorithm bandwidth
// (bytes / time) and the bus bandwidth (x 2(N-1)/N: what each rank sends and receives in a ring),
// from which docs/distributed.md projects when more machines pay off.
//   diffuse launch --nproc 2 -- build/benchmarks/bench_allreduce [--repeats 20] [BYTES ...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <diffuse/training/process_group.hpp>

using namespace diffuse;

int main(int argc, char** argv) {
  int repeats = 20;
  std::vector<std::int64_t> sizes;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--repeats" && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (std::atoll(a.c_str()) > 0) sizes.push_back(std::atoll(a.c_str()));
    else {
      std::fprintf(stderr, "usage: diffuse launch --nproc N -- %s [--repeats 20] [BYTES ...]\n", argv[0]);
      return 2;
    }
  }
  if (sizes.empty()) sizes = {4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20};
  try {
    const auto env = training::distributed_env();
    if (env.world_size < 2) {
      std::fprintf(stderr, "run it with several ranks: diffuse launch --nproc 2 -- %s\n", argv[0]);
      return 2;
    }
    training::ProcessGroup group(env);
    if (group.lead())
      std::printf("%d ranks, Gloo, float32 sums in buckets of %lld MiB, median of %d\n%12s %10s %12s %12s\n", group.size(),
                  static_cast<long long>(group.options().bucket_bytes >> 20), repeats, "bytes", "ms", "alg GB/s", "bus GB/s");
    for (const auto bytes : sizes) {
      auto buf = torch::ones({std::max<std::int64_t>(1, bytes / 4)}, torch::kFloat32);
      // One step number for all: the store write a new step costs is in the trainer's own report.
      for (int w = 0; w < 2; ++w) group.sum(buf, 0, "warm-up");
      std::vector<double> t;
      for (int r = 0; r < repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        group.sum(buf, 0, "the timed sum");
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(t.begin(), t.end());
      const double med = t[t.size() / 2];
      const double n = group.size();
      if (group.lead())
        std::printf("%12lld %10.3f %12.3f %12.3f\n", static_cast<long long>(bytes), med * 1e3, bytes / med / 1e9,
                    bytes / med / 1e9 * 2 * (n - 1) / n);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    return 1;
  }
}
