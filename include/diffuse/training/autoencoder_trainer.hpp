#pragma once
// Training a KL autoencoder on the shapes world: reconstruction loss (L1 or L2) plus a small KL
// weight (the LDM recipe without the adversarial and perceptual terms), AdamW with the rate decayed
// over the budget (training/lr_schedule.hpp), seeded; reports
// PSNR and SSIM (eval/metrics.hpp) on two fixed sets: unseen images of the training distribution
// (the reconstruction figure, as the SD3 paper's Table 3 measures it) and images of the held-out
// colour-shape combinations (how far the autoencoder generalises beyond what it was shown).
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/adamw.h>
#include <torch/types.h>
// after torch/types.h: LibTorch 1.13's clip_grad.h uses Tensor without including its header
#include <torch/nn/utils/clip_grad.h>

#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/core/config.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/data/shapes_dataset.hpp"
#include "diffuse/eval/metrics.hpp"
#include "diffuse/pipeline/images.hpp"
#include "diffuse/training/lr_schedule.hpp"
#include "diffuse/training/precision_choice.hpp"
#include "diffuse/training/shard_pool.hpp"

namespace diffuse::training {

struct AutoencoderTrainConfig {
  BOOST_HANA_DEFINE_STRUCT(AutoencoderTrainConfig,
                           (autoencoder::KLAutoencoderConfig, model),
                           (int, image_size), (int, batch), (int, steps), (double, minutes),
                           (double, lr), (double, kl_weight), (std::string, loss),
                           (int, train_images), (int, eval_images), (std::uint64_t, seed),
                           (std::string, lr_decay),    // constant | cosine | linear over the budget, after warmup
                           (int, warmup_steps),        // the rate rises linearly from 0 over these steps
                           (double, grad_clip),        // clip the gradient's global norm to this (0: off)
                           (std::string, precision),  // f32 | bf16 (autocast; weights, norms, loss and metrics stay
                                                      // f32) | auto (bf16 where the CPU runs it faster: precision_choice.hpp)
                           (int, workers),  // threads splitting each batch, one core each; 0: one per usable core
                           (std::string, posterior));  // what the decoder trains on: "sample" (the VAE recipe) or
                                                       // "mean" (a deterministic autoencoder; an ablation)
  // The SD3 structure at width 32 with 8 GroupNorm groups (4 channels a group at the first level, as
  // SD3's 32 groups at width 128): with 32 groups every channel is normalised alone and the same
  // configuration ended 23-30 dB apart across seeds, some never separating the colours; with 8,
  // 28-31 dB, higher in 8 of 9 seed-matched runs (means 29.9 against 26.7 dB; docs/autoencoder.md).
  static AutoencoderTrainConfig shapes_default() {
    return {{32, {1, 2, 2, 2}, 1, 3, 16, 8}, 32, 32, 3000, 0.0, 1e-3, 1e-6, "l1", 4096, 64, 0, "cosine", 0, 0.0, "auto", 0,
            "sample"};
  }
};

struct AutoencoderTrainResult {
  int steps = 0;
  double seconds = 0, final_loss = 0;
  double psnr = 0, ssim = 0;                  // unseen images of the training distribution
  double psnr_held_out = 0, ssim_held_out = 0;  // images of the held-out combinations
  std::string precision;  // the one used: "auto" resolved
};

// Shapes images as a (N, 3, S, S) tensor in [-1, 1]: examples first .. first + count - 1.
inline torch::Tensor shapes_images(int count, int size, std::uint64_t seed, data::Split split, std::uint64_t first = 0) {
  const data::ShapesWorld world(size, seed);
  auto out = torch::empty({count, 3, size, size});
  for (int i = 0; i < count; ++i) out[i] = pipeline::from_rgb(world.example(first + static_cast<std::uint64_t>(i), split).image);
  return out;
}

// The evaluation sets, the same for every training seed so runs with different seeds compare on
// the same images: world 0, training split from example 2^40 (training draws examples
// 0 .. train_images - 1 < 2^31, so none of these was trained on), and the held-out split.
struct AutoencoderEvalImages {
  torch::Tensor unseen, held_out;
};
inline constexpr std::uint64_t autoencoder_eval_first = std::uint64_t{1} << 40;
inline AutoencoderEvalImages autoencoder_eval_images(const AutoencoderTrainConfig& c) {
  return {shapes_images(c.eval_images, c.image_size, 0, data::Split::Train, autoencoder_eval_first),
          shapes_images(c.eval_images, c.image_size, 0, data::Split::HeldOut)};
}

inline eval::Image to_eval_image(const torch::Tensor& x) {  // (3, H, W) in [-1, 1] -> (H, W, 3) in [0, 255]
  const auto t = ((x.clamp(-1, 1) + 1) * 127.5).permute({1, 2, 0}).contiguous().to(torch::kFloat64);
  eval::Image img = xt::zeros<double>({static_cast<std::size_t>(t.size(0)), static_cast<std::size_t>(t.size(1)), std::size_t{3}});
  std::memcpy(img.data(), t.data_ptr<double>(), sizeof(double) * static_cast<std::size_t>(t.numel()));
  return img;
}

// Mean PSNR and SSIM of mean-latent reconstructions.
inline std::pair<double, double> reconstruction_metrics(autoencoder::KLAutoencoder& vae, const torch::Tensor& images) {
  torch::NoGradGuard g;
  const auto rec = vae->decode(vae->encode(images).mean);
  double p = 0, s = 0;
  for (std::int64_t i = 0; i < images.size(0); ++i) {
    const auto a = to_eval_image(images[i]), b = to_eval_image(rec[i]);
    p += std::min(eval::psnr(a, b), 100.0);
    s += eval::ssim(a, b);
  }
  return {p / images.size(0), s / images.size(0)};
}

// The batch split over worker threads, one core each (training/shard_pool.hpp; as the diffusion
// trainer does, docs/experiments/training_log.md): `diffuse vae train` at batch 32 ran 40 steps in 13 s on both
// cores and in 16 s pinned to one, while two pinned runs side by side took 16 s each. Worker 0
// runs the model, the others replicas whose parameters are views of the model's (the optimizer's
// update reaches all) with gradients of their own, added to the model's in a fixed order.
class AutoencoderShards {
 public:
  // workers: threads for a batch of `batch` rows (at most one a row).
  AutoencoderShards(autoencoder::KLAutoencoder& vae, int workers, std::int64_t batch) : vae_(vae), batch_(batch) {
    workers = static_cast<int>(std::min<std::int64_t>(workers, batch));
    if (workers <= 1) return;
    for (int k = 1; k < workers; ++k) {
      autoencoder::KLAutoencoder r(vae->config());
      replica_grads_.push_back(share_parameters(vae, r));
      replicas_.push_back(r);
    }
    pool_ = std::make_unique<ShardPool>(workers);
  }

  int workers() const { return pool_ ? pool_->size() : 1; }

  // loss(model, first, count) of the batch's rows [first, first + count), already weighted by its
  // share; runs every shard's backward and leaves the batch's gradient in the model's parameters.
  // Returns the batch's loss.
  template <class Loss>
  double step(const Loss& loss) {
    const int n = workers();
    std::vector<double> part(static_cast<std::size_t>(n));
    auto shard = [&](int k) {
      const std::int64_t lo = batch_ * k / n, hi = batch_ * (k + 1) / n;
      auto& m = k == 0 ? *vae_ : *replicas_[static_cast<std::size_t>(k - 1)];
      const auto l = loss(m, lo, hi - lo);
      l.backward();
      part[static_cast<std::size_t>(k)] = l.template item<double>();
    };
    if (pool_) pool_->run(shard);
    else shard(0);  // the whole batch on the calling thread and its intra-op threads
    torch::NoGradGuard g;
    auto params = vae_->parameters();
    for (std::size_t k = 0; k < replicas_.size(); ++k) {
      const auto replica_params = replicas_[k]->parameters();
      for (std::size_t i = 0; i < params.size(); ++i) {
        auto& grad = params[i].mutable_grad();
        const auto& other = replica_params[i].grad();
        if (grad.defined()) grad.add_(other);
        else grad = other.clone();
      }
      replica_grads_[k].zero_();
    }
    double total = 0;
    for (double l : part) total += l;
    return total;
  }

 private:
  autoencoder::KLAutoencoder& vae_;
  std::vector<autoencoder::KLAutoencoder> replicas_;
  std::vector<torch::Tensor> replica_grads_;  // each replica's gradients, as one buffer
  std::unique_ptr<ShardPool> pool_;           // null: the whole batch on the calling thread
  std::int64_t batch_;
};

inline AutoencoderTrainResult train_autoencoder(autoencoder::KLAutoencoder& vae, const AutoencoderTrainConfig& c,
                                                const std::function<void(int, double)>& on_step = {}) {
  if (c.loss != "l1" && c.loss != "l2") throw InputError("autoencoder training: loss must be l1 or l2");
  if (c.batch < 1 || c.train_images < c.batch) throw InputError("autoencoder training: need train_images >= batch >= 1");
  check_lr_decay(c.lr_decay, "autoencoder training: lr_decay");
  if (c.precision != "f32" && c.precision != "bf16" && c.precision != "auto")
    throw InputError("autoencoder training: precision must be f32, bf16 or auto");
  if (c.workers < 0) throw InputError("autoencoder training: workers must be >= 0 (0: one per usable core)");
  if (c.warmup_steps < 0) throw InputError("autoencoder training: warmup_steps must be >= 0");
  if (!(c.grad_clip >= 0)) throw InputError("autoencoder training: grad_clip must be >= 0 (0: off)");
  if (c.posterior != "sample" && c.posterior != "mean")
    throw InputError("autoencoder training: posterior must be sample or mean");
  const bool sample = c.posterior == "sample";
  torch::manual_seed(c.seed);
  const auto train = shapes_images(c.train_images, c.image_size, c.seed, data::Split::Train);
  const auto eval_images = autoencoder_eval_images(c);
  torch::optim::AdamW opt(vae->parameters(), torch::optim::AdamWOptions(c.lr).weight_decay(0.0));
  AutoencoderShards shards(vae, c.workers > 0 ? c.workers : usable_hardware_threads(), c.batch);
  auto gen = at::detail::createCPUGenerator(c.seed);
  const auto start = std::chrono::steady_clock::now();
  AutoencoderTrainResult r;
  // "auto": from the CPU's features (precision_choice.hpp); on the AMX machines bf16 ran the step
  // 1.25-1.43x faster, on the Intel one without AMX 0.74x (benchmarks/vae_train_step.cpp).
  r.precision = c.precision != "auto" ? c.precision : choose_precision().precision;
  const bool bf16 = r.precision == "bf16";
  for (int step = 0; c.minutes > 0 || step < c.steps; ++step) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (c.minutes > 0 && elapsed > c.minutes * 60) break;
    const double lr = scheduled_lr(c.lr, budget_progress(step, c.steps, elapsed, c.minutes), c.lr_decay,
                                   warmup_factor(step, c.warmup_steps));
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    const auto idx = torch::randint(c.train_images, {c.batch}, gen, torch::kLong);
    const auto x = train.index_select(0, idx);
    // the posterior sample's noise for the whole batch, drawn before any split: the same numbers
    // whatever the worker count (drawn for posterior "mean" too, so both draw the same batches)
    const auto f = vae->config().factor();
    const auto noise = torch::randn({c.batch, vae->config().z_channels, c.image_size / f, c.image_size / f}, gen,
                                    torch::TensorOptions().dtype(torch::kFloat32));
    opt.zero_grad();
    r.final_loss = shards.step([&](autoencoder::KLAutoencoderImpl& m, std::int64_t lo, std::int64_t n) {
      torch::Tensor rec;
      autoencoder::LatentDistribution d;
      {  // bf16 convolutions: 1.25-1.43x a float32 step on AMX machines (benchmarks/vae_train_step.cpp)
        CpuAutocast amp(bf16);
        d = m.encode(x.narrow(0, lo, n));
        rec = m.decode(sample ? d.sample(noise.narrow(0, lo, n)) : d.mean);
      }
      d = {d.mean.to(torch::kFloat32), d.logvar.to(torch::kFloat32)};
      const auto err = rec.to(torch::kFloat32) - x.narrow(0, lo, n);
      const auto recon = c.loss == "l1" ? err.abs().mean() : err.pow(2).mean();
      // KL(N(mu, sigma^2) || N(0, 1)) per latent element
      const auto kl = 0.5 * (d.mean.pow(2) + d.logvar.exp() - 1 - d.logvar).mean();
      // each shard's means weighted by its share: the shards' gradients add up to the batch's
      return (recon + c.kl_weight * kl) * (static_cast<double>(n) / static_cast<double>(c.batch));
    });
    if (c.grad_clip > 0) torch::nn::utils::clip_grad_norm_(vae->parameters(), c.grad_clip);
    opt.step();
    r.steps = step + 1;
    if (!std::isfinite(r.final_loss)) throw Error("autoencoder training: the loss became " + std::to_string(r.final_loss) + " at step " + std::to_string(step));
    if (on_step) on_step(step + 1, r.final_loss);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::tie(r.psnr, r.ssim) = reconstruction_metrics(vae, eval_images.unseen);
  std::tie(r.psnr_held_out, r.ssim_held_out) = reconstruction_metrics(vae, eval_images.held_out);
  return r;
}

}  // namespace diffuse::training
