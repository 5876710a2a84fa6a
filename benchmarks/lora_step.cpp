// Benchmark: one LoRA training step of an SD3-medium MM-DiT (random bf16 weights, memory-mapped,
// frozen) at 256x256 (32x32 latents: 256 image tokens + 154 text tokens), batch 1, against one
// forward of the same model in the same process; and the process's peak memory against the size
// of the bf16 weights.
//   ./bench_sd3_random_checkpoints DIR --mmdit-bf16      (writes DIR/mmdit.safetensors, 4.2 GB)
//   ./bench_lora_step DIR/mmdit.safetensors [--targets attention|all-linear] [--rank 64] [--repeats 2]
//                     [--recompute-every N]   (every N-th block recomputed in the backward; 0: none)
// A step: forward with autograd, the rectified-flow loss, backward into the adapters only, AdamW on
// the adapters (float32). Run once per target set: each process's peak is its own.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <diffuse/core/runtime_tuning.hpp>
#include <diffuse/io/mmdit_checkpoint.hpp>
#include <diffuse/nn/lora.hpp>
#include <diffuse/training/flat_adamw.hpp>

using namespace diffuse;
using clock_type = std::chrono::steady_clock;

double peak_gib() {  // ru_maxrss: peak resident set, KiB on Linux
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);
}

int main(int argc, char** argv) {
  diffuse::tune_runtime(argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MMDIT.safetensors [--targets attention|all-linear] [--rank 64] [--repeats 2] [--recompute-every N]\n",
                 argv[0]);
    return 2;
  }
  std::string file = argv[1], targets = "attention";
  int rank = 64, repeats = 2, recompute_every = 0;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    const std::string v = i + 1 < argc ? argv[i + 1] : "";
    if (a == "--targets") targets = v, ++i;
    else if (a == "--rank") rank = std::stoi(v), ++i;
    else if (a == "--repeats") repeats = std::stoi(v), ++i;
    else if (a == "--recompute-every") recompute_every = std::stoi(v), ++i;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  io::MMDiTLoadOptions lo;
  lo.dtype = torch::kBFloat16;
  auto model = io::load_mmdit(file, lo);
  double weight_bytes = 0;
  for (const auto& p : model->parameters()) weight_bytes += static_cast<double>(p.numel() * p.element_size());
  const auto& c = model->config();
  std::printf("SD3-medium-config MM-DiT: depth %d, hidden %lld, %.2f GiB of bf16 weights; peak after load %.2f GiB\n", c.depth,
              static_cast<long long>(c.hidden_size()), weight_bytes / (1 << 30), peak_gib());
  torch::manual_seed(0);
  const auto bf = torch::kBFloat16;
  const auto x = torch::randn({1, 16, 32, 32}).to(bf), y = torch::randn({1, c.adm_in}).to(bf),
             ctx = torch::randn({1, 154, c.context_in}).to(bf), t = torch::full({1}, 500.0).to(bf);
  const auto target = torch::randn({1, 16, 32, 32});
  auto best_of = [&](auto&& f) {
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = clock_type::now();
      f();
      best = std::min(best, std::chrono::duration<double>(clock_type::now() - t0).count());
    }
    return best;
  };
  model->eval();
  const double forward = best_of([&] {
    torch::NoGradGuard g;
    model->forward(x, t, y, ctx);
  });
  const double peak_forward = peak_gib();
  const auto adapters = nn::add_lora_adapters(*model, {targets}, rank, rank);
  std::vector<torch::Tensor> params;
  std::int64_t n = 0;
  for (const auto& [name, a] : adapters)
    for (auto& p : a->parameters()) params.push_back(p), n += p.numel();
  training::FlatAdamW opt(params, {});
  model->train();
  model->recompute_every = recompute_every;
  const double step = best_of([&] {
    opt.zero_grad();
    const auto loss = (model->forward(x, t, y, ctx).to(torch::kFloat32) - target).pow(2).mean();
    loss.backward();
    opt.clip_grad_norm(1.0);
    opt.step(1e-4);
  });
  const double peak = peak_gib();
  std::printf("targets %s, rank %d, recompute every %d blocks: %zu adapters, %.1fM trained parameters\n", targets.c_str(), rank,
              recompute_every, adapters.size(), n / 1e6);
  std::printf("forward %.2f s; LoRA step %.2f s = %.2fx the forward (target <= 2.5x)\n", forward, step, step / forward);
  std::printf("peak memory %.2f GiB = %.2fx the bf16 weights (target <= 1.3x); after the forward %.2f GiB\n", peak,
              peak / (weight_bytes / (1 << 30)), peak_forward);
  return 0;
}
