// Benchmark: the autoencoder's training step (scripts/vae_table3.sh's inner loop) in float32 on one
// batch (the baseline), with the batch split over one worker per core (AutoencoderTrainConfig::
// workers), and both with bfloat16 autocast, interleaved rounds in one run; reports ms per step and
// the speed-up over the baseline. (Channels-last was tried and dropped: LibTorch 1.13's CPU GroupNorm is
// slower on NHWC than the convolutions gain.)
//   ./bench_vae_train_step [--steps 20] [--rounds 2] [--config AutoencoderTrainConfig.json]
//                          [--profile trace.json]   (bf16 on one worker only: a Chrome trace of the
//                          timed steps; scripts/profile_summary.py adds up self time per operator)
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/csrc/autograd/profiler_legacy.h>

#include <diffuse/core/runtime_tuning.hpp>
#include <diffuse/core/torch_compat.hpp>
#include <diffuse/training/autoencoder_trainer.hpp>

using namespace diffuse;
using clock_type = std::chrono::steady_clock;

int main(int argc, char** argv) {
  diffuse::tune_runtime(argv);
  int steps = 20, rounds = 2;
  std::string config, profile;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    try {
      if (a == "--steps") steps = std::stoi(next());
      else if (a == "--rounds") rounds = std::stoi(next());
      else if (a == "--config") config = next();
      else if (a == "--profile") profile = next();
      else throw std::invalid_argument(a);
    } catch (const std::exception&) {
      std::fprintf(stderr, "usage: %s [--steps N] [--rounds R] [--config AutoencoderTrainConfig.json] [--profile trace.json]\n", argv[0]);
      return 2;
    }
  }
  const int threads = configure_threads();
  if (!profile.empty()) rounds = 1;
  auto base = training::AutoencoderTrainConfig::shapes_default();
  try {
    if (!config.empty()) base = load_config<training::AutoencoderTrainConfig>(config, base);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  const int warmup = 3;
  base.steps = warmup + steps;
  base.minutes = 0;
  base.train_images = std::max(base.batch, 256);  // image generation is not what is measured
  base.eval_images = 2;
  std::printf("autoencoder training step: width %d, %d levels, %d latent channels, batch %d, %dx%d images, %d threads\n",
              base.model.ch, base.model.levels(), base.model.z_channels, base.batch, base.image_size, base.image_size, threads);
  std::printf("%d timed steps after %d warm-up steps, %d interleaved rounds (best round kept)\n", steps, warmup, rounds);
  struct Variant {
    std::string precision;
    int workers;  // 0: one per usable core
    std::string name() const {
      return precision + (workers == 1 ? " 1 worker" : " " + std::to_string(usable_hardware_threads()) + " workers");
    }
  };
  const std::vector<Variant> variants{{"f32", 1}, {"f32", 0}, {"bf16", 1}, {"bf16", 0}};
  std::map<int, double> best;
  for (int r = 0; r < rounds; ++r)
    for (int v = 0; v < static_cast<int>(variants.size()); ++v) {
      auto c = base;
      c.precision = variants[v].precision;
      c.workers = variants[v].workers;
      if (!profile.empty() && (c.precision != "bf16" || c.workers != 1)) continue;
      torch::manual_seed(0);
      autoencoder::KLAutoencoder vae(c.model);
      clock_type::time_point t0, t1;
      std::unique_ptr<torch::autograd::profiler::RecordProfile> trace;
      training::train_autoencoder(vae, c, [&](int step, double) {
        if (step == warmup) {
          if (!profile.empty()) trace = std::make_unique<torch::autograd::profiler::RecordProfile>(profile);
          t0 = clock_type::now();
        }
        if (step == warmup + steps) t1 = clock_type::now(), trace.reset();
      });
      const double ms = std::chrono::duration<double, std::milli>(t1 - t0).count() / steps;
      best[v] = r == 0 ? ms : std::min(best[v], ms);
    }
  std::printf("%-16s %10s %10s\n", "variant", "step ms", "speed-up");
  for (int v = 0; v < static_cast<int>(variants.size()); ++v)
    if (best.count(v))
      std::printf("%-16s %10.1f %9.2fx\n", variants[v].name().c_str(), best[v], best.count(0) ? best[0] / best[v] : 0.0);
  if (!profile.empty()) std::printf("trace: %s\n", profile.c_str());
  return 0;
}
