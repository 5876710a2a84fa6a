#pragma once
// LoRA fine-tuning of a trained MM-DiT on captioned images (Hu et al. 2021; the recipe of
// diffusers' train_dreambooth_lora_sd3.py and kohya's sd-scripts): the base model is frozen in
// whatever dtype it was loaded in, adapters (nn/lora.hpp, float32, zero up-projection so step 0
// is the base model) are attached to the target Linear layers, and only they and their AdamW
// moments are trained, with the base's rectified-flow objective at runtime numbers
// ("rf/lognorm(0, 1)", training/objective_spec.hpp) and SD3's timestep shift (eq. 23).
//
// The images are cut to aspect-ratio buckets (data/aspect_buckets.hpp) and encoded once (latents
// by the base's autoencoder, captions by its text encoders, both frozen); every batch is drawn
// from one bucket. Everything random in step s comes from a generator seeded by (seed, s).
//
// The output folder:
//   lora_config.json      the LoraTrainConfig, with what `auto` and 0 resolved to
//   lora.safetensors      the adapters, diffusers / PEFT layout (`diffuse generate --lora`)
//   lora_kohya.safetensors  the same, kohya layout
//   state/                adapters.safetensors, optimizer.safetensors, state.json (for --resume)
//   metrics.jsonl, loss.png
// Both LoRA files are rewritten (atomically) at every checkpoint and at the end.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "diffuse/backbone/mmdit.hpp"
#include "diffuse/core/config.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/data/aspect_buckets.hpp"
#include "diffuse/data/dataset.hpp"
#include "diffuse/encoders/caption_encoder.hpp"
#include "diffuse/eval/plot.hpp"
#include "diffuse/io/image_tensor.hpp"
#include "diffuse/io/lora_file.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/nn/lora.hpp"
#include "diffuse/timesteps/shift.hpp"
#include "diffuse/training/adapter_checkpoint.hpp"
#include "diffuse/training/bucketed_features.hpp"
#include "diffuse/training/checkpoint_files.hpp"
#include "diffuse/training/flat_adamw.hpp"
#include "diffuse/training/lr_schedule.hpp"
#include "diffuse/training/metrics_file.hpp"
#include "diffuse/training/objective_spec.hpp"
#include "diffuse/training/precision_choice.hpp"
#include "diffuse/training/run_records.hpp"
#include "diffuse/training/step_randomness.hpp"

namespace diffuse::training {

// What a base model offers the fine-tuner: its MM-DiT (trained through adapters), its frozen
// encoders, the pixel multiple its images need (autoencoder factor x patch), the resolution it
// was trained at and the timestep shift it trains with. pipeline::SD3Generator (released SD3
// checkpoints) and pipeline::TrainedModel (a `diffuse train` folder) are models of it.
template <class B>
concept LoraBase = requires(B& b, const std::vector<std::string>& texts, const torch::Tensor& images) {
  { b.backbone() } -> std::same_as<backbone::MMDiT&>;
  { b.encode_text(texts) } -> std::same_as<encoders::TextFeatures>;
  { b.encode_images(images) } -> std::same_as<torch::Tensor>;  // (B, 3, H, W) in [-1, 1] -> x0, float32
  { b.pixel_multiple() } -> std::convertible_to<int>;
  { b.native_resolution() } -> std::convertible_to<int>;
  { b.training_shift() } -> std::convertible_to<double>;
};

struct LoraTrainConfig {
  BOOST_HANA_DEFINE_STRUCT(LoraTrainConfig,
                           (std::string, objective),  // "rf/lognorm(m, s)", the base pipeline's process and distribution
                           (double, timestep_shift),  // SD3 eq. 23 on the training t; 0: the base's (3 for SD3 checkpoints)
                           (int, rank), (double, alpha),  // scale alpha / rank; alpha 0: = rank
                           (std::vector<std::string>, targets),  // attention | all-linear | module-name suffixes
                           (int, resolution),  // bucket area resolution^2; 0: the base's training resolution
                           (double, max_aspect),  // buckets' widest aspect ratio
                           (int, batch), (double, lr), (int, warmup_steps), (std::string, lr_decay),
                           (double, weight_decay), (double, grad_clip),
                           (double, drop_rate),  // for CFG: each text encoder dropped independently (zeros)
                                                 // where the base has SD3's stack; else context and pooled
                           (std::string, precision),  // f32 | bf16 | auto, for a float32 base (autocast)
                           (int, steps), (double, minutes), (std::uint64_t, seed), (int, log_every),
                           (int, checkpoint_every),  // steps; 0: only at the end
                           (int, recompute_every),  // every N-th MM-DiT block recomputed in the backward
                                                    // (backbone::RecomputedJointBlock): memory for time; 0: none
                           (std::string, base_model));  // what was fine-tuned (a record, not read back)

  // diffusers' SD3 LoRA script's defaults where it has them (rank 4 there; 16 here as kohya's
  // common choice), logit-normal(0, 1) t.
  static LoraTrainConfig defaults() {
    return {.objective = "rf/lognorm(0, 1)", .timestep_shift = 0, .rank = 16, .alpha = 0, .targets = {"attention"},
            .resolution = 0, .max_aspect = 2.0, .batch = 1, .lr = 1e-4, .warmup_steps = 0, .lr_decay = "constant",
            .weight_decay = 1e-4, .grad_clip = 1.0, .drop_rate = 0.0, .precision = "auto", .steps = 500, .minutes = 0,
            .seed = 0, .log_every = 10, .checkpoint_every = 100, .recompute_every = 0, .base_model = ""};
  }
  void validate() const {
    auto bad = [](const std::string& m) { throw InputError("LoRA training: " + m); };
    if (rank < 1) bad("rank must be at least 1");
    if (!(alpha >= 0) || !std::isfinite(alpha)) bad("alpha must be >= 0 (0: the rank)");
    if (targets.empty()) bad("targets must name at least one layer group");
    if (resolution < 0) bad("resolution must be >= 0 (0: the base model's)");
    if (!(max_aspect >= 1)) bad("max_aspect must be at least 1");
    if (batch < 1) bad("batch must be at least 1");
    if (!(lr > 0) || warmup_steps < 0 || weight_decay < 0 || grad_clip < 0) bad("lr > 0, warmup_steps, weight_decay, grad_clip >= 0");
    if (!(drop_rate >= 0 && drop_rate <= 1)) bad("drop_rate must be in [0, 1]");
    if (!(timestep_shift >= 0)) bad("timestep_shift must be >= 0 (0: the base model's)");
    if (precision != "f32" && precision != "bf16" && precision != "auto") bad("precision must be f32, bf16 or auto");
    if (steps < 0 || minutes < 0 || (steps == 0 && minutes == 0)) bad("give steps > 0 or minutes > 0");
    if (log_every < 1 || checkpoint_every < 0 || recompute_every < 0) bad("log_every >= 1, checkpoint_every >= 0, recompute_every >= 0");
    check_lr_decay(lr_decay, "LoRA training: lr_decay");
  }
};

struct LoraTrainResult {
  int steps = 0;
  double seconds = 0, final_loss = 0, fit_loss_before = 0, fit_loss_after = 0;
  std::size_t examples = 0, skipped = 0;
};

template <class Objective, LoraBase Base>
class LoraTrainer {
 public:
  // Encodes `data` (skipping and logging unreadable items) and attaches the adapters to the base's
  // MM-DiT; `resume` continues the run in `dir` (its saved config; `config`'s steps / minutes are
  // the new budget).
  template <data::CaptionedImages Data>
  LoraTrainer(Base& base, const Data& data, std::filesystem::path dir, LoraTrainConfig config, bool resume,
              TrainCallbacks cb = {})
      : base_(base), dir_(std::move(dir)), c_(std::move(config)), cb_(std::move(cb)) {
    namespace fs = std::filesystem;
    const bool has_run = fs::exists(dir_ / "state" / "state.json");
    if (resume && !has_run) throw InputError(dir_.string() + ": nothing to resume (no state/state.json)");
    if (!resume && has_run)
      throw InputError(dir_.string() + ": already holds a LoRA training run; pass --resume to continue it or choose another --out");
    if (resume) {
      auto saved = load_config<LoraTrainConfig>(dir_ / "lora_config.json", LoraTrainConfig::defaults());
      saved.steps = c_.steps, saved.minutes = c_.minutes;
      saved.recompute_every = c_.recompute_every;  // memory, not the run's arithmetic: as given now
      c_ = saved;
    }
    if (c_.alpha == 0) c_.alpha = c_.rank;
    if (c_.resolution == 0) c_.resolution = base_.native_resolution();
    if (c_.timestep_shift == 0) c_.timestep_shift = base_.training_shift();
    if (c_.precision == "auto") c_.precision = choose_precision().precision;
    c_.validate();
    objective_ = objective_from_spec<Objective>(c_.objective);
    fs::create_directories(dir_ / "state");
    if (!resume) trainer_detail::write_text(dir_ / "lora_config.json", config_to_string(c_) + "\n");
    encode(data);
    auto& model = base_.backbone();
    dtype_ = model->parameters().front().scalar_type();
    autocast_ = dtype_ == torch::kFloat32 && c_.precision == "bf16";
    torch::manual_seed(c_.seed);
    adapters_ = nn::add_lora_adapters(*model, c_.targets, c_.rank, c_.alpha);
    model->recompute_every = c_.recompute_every;
    std::vector<torch::Tensor> params;
    std::int64_t n = 0;
    for (auto& [name, a] : adapters_)
      for (auto& p : a->parameters()) params.push_back(p), n += p.numel();
    AdamWSettings s;
    s.weight_decay = c_.weight_decay;
    opt_ = std::make_unique<FlatAdamW>(params, s);
    log("LoRA rank " + std::to_string(c_.rank) + ", alpha " + fmt(c_.alpha) + " on " + std::to_string(adapters_.size()) +
        " Linear layers: " + std::to_string(n) + " trained parameters; base in " + std::string(c10::toString(dtype_)) +
        (autocast_ ? " with bf16 autocast" : "") + "; objective " + c_.objective + ", shift " + fmt(c_.timestep_shift));
    if (resume) restore();
  }

  const LoraTrainConfig& config() const { return c_; }
  int step() const { return step_; }
  std::size_t examples() const { return examples_; }
  const std::vector<data::SkippedFile>& skipped() const { return skipped_; }
  std::vector<std::pair<data::Bucket, std::int64_t>> bucket_counts() const {
    std::vector<std::pair<data::Bucket, std::int64_t>> out;
    for (const auto& b : buckets_) out.emplace_back(b.bucket, b.latents.size(0));
    return out;
  }

  // One optimisation step on a batch of one bucket; returns its record.
  StepRecord train_step() {
    const auto t0 = std::chrono::steady_clock::now();
    auto gen = at::detail::createCPUGenerator(trainer_detail::step_seed(c_.seed ^ 0x6c6f7261ull, step_));
    const auto bi = torch::multinomial(bucket_weights_, 1, true, gen).template item<std::int64_t>();
    const auto& b = buckets_[static_cast<std::size_t>(bi)];
    const auto idx = torch::randint(b.latents.size(0), {c_.batch}, gen, torch::kLong);
    const auto x0 = b.latents.index_select(0, idx);
    auto ctx = b.context.index_select(0, idx), pooled = b.pooled.index_select(0, idx);
    if (c_.drop_rate > 0) {
      if constexpr (requires { base_.apply_dropout(ctx, pooled, c_.drop_rate, gen); }) {
        base_.apply_dropout(ctx, pooled, c_.drop_rate, gen);  // per encoder (SD3's text stack)
      } else {
        const auto [keep_ctx, keep_pooled] = conditioning_keep_masks(c_.batch, c_.drop_rate, gen);
        ctx = ctx * keep_ctx.view({c_.batch, 1, 1});
        pooled = pooled * keep_pooled.view({c_.batch, 1});
      }
    }
    const auto t = trainer_detail::sample_training_t(objective_, c_.timestep_shift, c_.batch, gen, x0);
    const auto noise = torch::randn(x0.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
    const double lr = scheduled_lr(c_.lr, budget_progress(step_, c_.steps, elapsed_, c_.minutes), c_.lr_decay,
                                   warmup_factor(step_, c_.warmup_steps));
    opt_->zero_grad();
    const auto loss = loss_of(x0, noise, t, ctx, pooled).mean();
    loss.backward();
    const double loss_v = loss.template item<double>();
    const double norm = opt_->clip_grad_norm(c_.grad_clip);
    if (!std::isfinite(loss_v) || !std::isfinite(norm))
      throw Error("LoRA training stopped at step " + std::to_string(step_ + 1) + ": non-finite loss " + std::to_string(loss_v) +
                  " / gradient norm " + std::to_string(norm) + "; the adapters were not updated. Lower lr (now " + fmt(c_.lr) + ").");
    opt_->step(lr);
    ++step_;
    return {step_, loss_v, norm, lr, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
  }

  // The mean loss over every encoded example at 8 fixed t (grid midpoints) and fixed noise: a
  // deterministic measure of how well the model fits the fine-tuning data.
  double fit_loss() {
    torch::NoGradGuard g;
    base_.backbone()->eval();
    double total = 0;
    std::int64_t count = 0;
    for (const auto& b : buckets_) {
      auto gen = at::detail::createCPUGenerator(c_.seed ^ 0x666974ull);
      for (std::int64_t lo = 0; lo < b.latents.size(0); lo += 8) {
        const auto n = std::min<std::int64_t>(8, b.latents.size(0) - lo);
        const auto x0 = b.latents.narrow(0, lo, n);
        for (int k = 0; k < 8; ++k) {
          const auto t = torch::full({n}, (k + 0.5) / 8.0);
          const auto noise = torch::randn(x0.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
          total += loss_of(x0, noise, t, b.context.narrow(0, lo, n), b.pooled.narrow(0, lo, n)).sum().template item<double>();
          count += n;
        }
      }
    }
    return total / static_cast<double>(count);
  }

  // Trains until the budget (steps or minutes, counted over resumes) or keep_going says stop.
  LoraTrainResult run() {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const double base_elapsed = elapsed_;
    auto now = [&] { return base_elapsed + std::chrono::duration<double>(clock::now() - start).count(); };
    auto done = [&] { return c_.minutes > 0 ? now() >= c_.minutes * 60 : step_ >= c_.steps; };
    LoraTrainResult res;
    res.examples = examples_, res.skipped = skipped_.size();
    res.fit_loss_before = fit_loss();
    metrics_line({{"step", step_}, {"fit_loss", res.fit_loss_before}});
    log("fit loss at step " + std::to_string(step_) + ": " + fmt(res.fit_loss_before));
    double window_loss = 0, window_time = 0;
    int window = 0;
    base_.backbone()->train();
    while (!done()) {
      const auto r = train_step();
      elapsed_ = now();
      window_loss += r.loss, window_time += r.seconds, ++window;
      res.final_loss = r.loss;
      metrics_line({{"step", r.step}, {"loss", r.loss}, {"grad_norm", r.grad_norm}, {"lr", r.lr}, {"seconds", elapsed_}});
      if (step_ % c_.log_every == 0) {
        char buf[200];
        std::snprintf(buf, sizeof buf, "step %d%s  loss %.4f  lr %.2g  %.2f s/step  elapsed %.0f s", step_,
                      c_.minutes > 0 ? "" : ("/" + std::to_string(c_.steps)).c_str(), window_loss / window, r.lr,
                      window_time / window, elapsed_);
        log(buf);
        window_loss = window_time = 0, window = 0;
      }
      const bool stop = cb_.keep_going && !cb_.keep_going(step_);
      if (c_.checkpoint_every > 0 && step_ % c_.checkpoint_every == 0 && !stop && !done()) save();
      if (stop) break;
    }
    elapsed_ = now();
    res.fit_loss_after = fit_loss();
    metrics_line({{"step", step_}, {"fit_loss", res.fit_loss_after}});
    log("fit loss at step " + std::to_string(step_) + ": " + fmt(res.fit_loss_after));
    save();
    res.steps = step_;
    res.seconds = elapsed_;
    return res;
  }

  // Writes both LoRA files and the resumable state (training/adapter_checkpoint.hpp).
  void save() {
    save_adapter_run(dir_, base_.backbone(), adapters_, *opt_, {step_, elapsed_});
    write_plot();
    log("step " + std::to_string(step_) + ": wrote " + (dir_ / "lora.safetensors").string() + " and lora_kohya.safetensors");
  }

 private:
  // Per-example loss of the base + adapters on (x0, noise, t) with the given conditioning.
  torch::Tensor loss_of(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& t, const torch::Tensor& ctx,
                        const torch::Tensor& pooled) {
    auto& model = base_.backbone();
    const auto in = objective_.inputs(x0, noise, t);
    torch::Tensor out;
    {
      CpuAutocast amp(autocast_);
      out = model->forward(in.z.to(dtype_), t * 1000.0, pooled.to(dtype_), ctx.to(dtype_));  // t stays float32, as in generation
    }
    return objective_.loss(out.to(torch::kFloat32), x0, noise, t);
  }

  template <class Data>
  void encode(const Data& data) {
    const auto buckets = usable_buckets(c_.resolution, base_.pixel_multiple(), base_.backbone()->config().pos_embed_max_size,
                                        c_.max_aspect, "LoRA training");
    auto f = encode_in_buckets(
        data, buckets, [&](const torch::Tensor& images) { return base_.encode_images(images); },
        [&](const std::vector<std::string>& caps) { return base_.encode_text(caps); }, [&](const std::string& s) { log(s); },
        "LoRA training");
    examples_ = static_cast<std::size_t>(f.examples());
    bucket_weights_ = f.weights();
    buckets_ = std::move(f.buckets);
    skipped_ = std::move(f.skipped);
  }

  void restore() {
    const auto st = restore_adapter_run(dir_, adapters_, *opt_, "LoRA training");
    step_ = st.step;
    elapsed_ = st.elapsed_seconds;
    metrics_.forget_after(step_);  // those steps run again
    log("resumed at step " + std::to_string(step_));
  }

  void write_plot() {
    eval::Series train{"train loss (mean of 10 steps)", {}, {}, eval::palette(0)};
    std::ifstream in(dir_ / "metrics.jsonl");
    double acc = 0;
    int n = 0;
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("loss")) continue;
      acc += j["loss"].get<double>(), ++n;
      if (n == 10) train.x.push_back(j["step"].get<double>()), train.y.push_back(acc / n), acc = 0, n = 0;
    }
    if (train.x.size() < 2) return;
    eval::Panel p{"LoRA fine-tuning loss", "step", "loss", {train}, {}, 0.0};
    io::write_png(dir_ / "loss.png", eval::render_plot({p}));
  }

  void metrics_line(const nlohmann::json& j) { metrics_.append(j); }
  void log(const std::string& s) const {
    if (cb_.log) cb_.log(s);
  }
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
  }

  Base& base_;
  std::filesystem::path dir_;
  LoraTrainConfig c_;
  TrainCallbacks cb_;
  Objective objective_{};
  std::vector<FeatureBucket> buckets_;
  torch::Tensor bucket_weights_;
  std::vector<data::SkippedFile> skipped_;
  std::size_t examples_ = 0;
  NamedAdapters adapters_;
  std::unique_ptr<FlatAdamW> opt_;
  torch::ScalarType dtype_ = torch::kFloat32;
  bool autocast_ = false;
  int step_ = 0;
  double elapsed_ = 0;
  MetricsFile metrics_{dir_ / "metrics.jsonl"};
};

}  // namespace diffuse::training
