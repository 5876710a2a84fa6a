#pragma once
// Training a pipeline's model (the backbone slot's module_type) from its precomputed features
// (training/feature_cache.hpp): the shapes world, or a folder of captioned images in aspect-ratio
// buckets with batches of one bucket (training/bucketed_features.hpp); the conditioning slot
// learned with the model or SD3's released text stack (training/conditioning_setup.hpp).
// AdamW with linear warmup and an optional decay over the budget (training/lr_schedule.hpp), on
// flat buffers with gradient clipping and EMA weights (training/flat_adamw.hpp), per-input
// conditioning dropout (for classifier-free guidance; per encoder where the policy knows its
// encoders), a NaN/inf guard, validation loss on a fixed batch over a fixed t grid (the SD3
// paper's model-selection signal, section 5.3.2), atomic resumable checkpoints, metrics as JSON
// lines, and loss-curve and sample-grid PNGs.
//
// Reproducibility: everything random in step s (batch indices, t, noise, dropout) comes from a
// generator seeded by (seed, s), and the checkpoint holds the weights, the EMA and the optimizer
// state, so a resumed run repeats the uninterrupted run's steps exactly. What a run decides from
// the machine (precision "auto", workers 0) is decided once, at its start, and written into its
// config.json, which a resume reads: a run is fixed by its config and seed, never by a timing.
//
// Several processes (training/process_group.hpp, docs/distributed.md): every rank draws the whole
// global batch from (seed, step) as one process would, trains on its contiguous slice of it (each
// slice's mean loss weighted by its share of the batch), and the gradients are summed over the
// ranks before clipping and AdamW, so N ranks take one process's steps up to the order of float
// sums. Rank 0 alone writes the run's files; the others read what it wrote (config.json, the
// tokenizer, the feature cache) and receive its initial weights; rank 0's clock decides
// time budgets for all.
//
// Its parts: train_config.hpp (TrainConfig), step_randomness.hpp (what is random in a step),
// checkpoint_files.hpp, run_records.hpp (what the loop reports); this header is the loop.
//
// The model folder:
//   config.json                  the TrainConfig
//   recipe.txt                   the pipeline type, described
//   tokenizer.model, text_encoder.safetensors   a learned conditioning encoder (frozen)
//   state.json                   step, elapsed time and the current checkpoint folder (written last)
//   ckpt-NNNNNNN/                model.safetensors, ema.safetensors (MM-DiT key layout),
//                                optimizer.safetensors (AdamW moments and step)
//   metrics.jsonl, loss.png, samples.png, snapshots/ema-<M>min.safetensors
//   cache/features-<key>.safetensors
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/record_function.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "diffuse/core/config.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/data/image_folder.hpp"
#include "diffuse/data/shapes_dataset.hpp"
#include "diffuse/eval/plot.hpp"
#include "diffuse/io/atomic_file.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/pipeline/generate.hpp"
#include "diffuse/pipeline/images.hpp"
#include "diffuse/training/bucketed_features.hpp"
#include "diffuse/training/checkpoint_files.hpp"
#include "diffuse/training/conditioning_setup.hpp"
#include "diffuse/training/feature_cache.hpp"
#include "diffuse/training/flat_adamw.hpp"
#include "diffuse/training/lr_schedule.hpp"
#include "diffuse/training/metrics_file.hpp"
#include "diffuse/training/objective_spec.hpp"
#include "diffuse/training/precision_choice.hpp"
#include "diffuse/training/process_group.hpp"
#include "diffuse/training/run_records.hpp"
#include "diffuse/training/shard_pool.hpp"
#include "diffuse/training/step_randomness.hpp"
#include "diffuse/training/train_config.hpp"

namespace diffuse::training {

// Sampling weights of the shapes examples [first, first + count) for a training mix over the six
// categories (TrainConfig::category_weights, in data::all_categories order): each example weighs its
// category's weight, so a category's share of the batches is its weight over the sum. Empty
// weights: an undefined tensor (every example equally likely, the dataset's equal shares).
inline torch::Tensor shapes_example_weights(const std::vector<double>& category_weights, std::int64_t first, std::int64_t count) {
  if (category_weights.empty()) return {};
  if (category_weights.size() != data::all_categories.size()) throw InputError("category_weights: need one weight per category (6)");
  auto w = torch::empty({count}, torch::kFloat64);
  auto a = w.accessor<double, 1>();
  for (std::int64_t i = 0; i < count; ++i)
    a[i] = category_weights[static_cast<std::size_t>(data::category_of_example(static_cast<std::uint64_t>(first + i)))];
  return w;
}

// The fixed evaluation prompts of the sample sheet: two per category, one held-out.
inline std::vector<std::string> sample_sheet_prompts() {
  return {"a red circle",          "a blue square",
          "a green triangle and a yellow circle", "a purple square and an orange circle",
          "two blue circles",      "three red squares",
          "a yellow triangle",     "a purple triangle",
          "a red circle above a blue square",     "a green square left of a yellow triangle",
          "a blue circle and a red triangle",     "an orange square and a green circle"};
}

template <class P>
class Trainer {
 public:
  using Conditioning = typename P::conditioning_type;
  using Autoencoder = typename P::autoencoder_type;
  using Module = typename P::backbone_type::module_type;
  static_assert(TrainableConditioning<Conditioning>,
                "Trainer<P>: the pipeline's conditioning slot must be learned with the model (create(dir, captions, "
                "config) and load(dir), e.g. encoders::CaptionConditioning) or a released text stack (load(sources, "
                "options), e.g. encoders::SD3TextConditioning)");

  // Starts a new run in `dir` (which must not hold one) or, with `resume`, continues the run
  // there with its saved config.json; `config`'s steps / minutes are then the new budget (pass the
  // saved ones to finish the run as planned). With `group`, this process is one rank of a
  // data-parallel run (every rank passes the same dir, config and resume).
  Trainer(std::filesystem::path dir, TrainConfig config, bool resume, TrainCallbacks cb = {},
          std::shared_ptr<ProcessGroup> group = nullptr)
      : dir_(std::move(dir)), c_(std::move(config)), cb_(std::move(cb)), group_(std::move(group)),
        lead_(!group_ || group_->lead()), ae_(c_.autoencoder_weights) {
    namespace fs = std::filesystem;
    if (!lead_) {
      // Rank 0 checks the folder and writes the run's files; this rank reads them once it says so.
      group_->wait_for("setup", [&](const std::string& s) {
        if (cb_.log) cb_.log(s);
      });
      if (!fs::is_regular_file(dir_ / "config.json")) throw Error(dir_.string() + ": rank 0 wrote no config.json");
    }
    const bool has_run = fs::exists(dir_ / "state.json");
    if (lead_ && resume && !has_run) throw InputError(dir_.string() + ": nothing to resume (no state.json)");
    if (lead_ && !resume && has_run)
      throw InputError(dir_.string() + ": already holds a training run; pass --resume to continue it or choose another --out");
    const bool reads_files = resume || !lead_;  // the tokenizer and config.json exist (rank 0's or the run's)
    if (reads_files) {
      auto saved = load_config<TrainConfig>(dir_ / "config.json", TrainConfig::shapes_default());
      saved.steps = c_.steps, saved.minutes = c_.minutes;  // the new budget
      c_ = saved;
    }
    c_.validate();
    if (group_ && c_.batch < group_->size())
      throw InputError("batch " + std::to_string(c_.batch) + " is smaller than the " + std::to_string(group_->size()) +
                       " processes of the run: each rank needs at least one example of the global batch");
    if (!c_.objective.empty()) objective_ = objective_from_spec<typename P::objective_type>(c_.objective);
    std::optional<data::ImageFolder> folder;
    if (!c_.data.empty()) {
      folder.emplace(c_.data);
      log("data: " + c_.data + ": " + std::to_string(folder->size()) + " captioned images" +
          (folder->skipped().empty() ? std::string() : ", " + std::to_string(folder->skipped().size()) + " files skipped"));
      if (folder->size() == 0)
        throw InputError(c_.data + ": no captioned images (" +
                         (folder->skipped().empty() ? std::string("no .png/.jpg/.webp/.bmp files")
                                                    : folder->skipped().front().file + ": " + folder->skipped().front().reason) +
                         ")");
    }
    if (lead_) fs::create_directories(dir_);
    log("recipe: " + P::describe());
    if (!reads_files) trainer_detail::write_text(dir_ / "recipe.txt", P::describe() + "\n");
    if constexpr (LearnedConditioning<Conditioning>) {
      if (!reads_files) {
        // The tokenizer learns the run's captions: a folder's, or the first shapes examples' (every
        // word of the grammar occurs there).
        std::vector<std::string> words;
        if (folder) {
          for (std::size_t i = 0; i < folder->size(); ++i) words.push_back(folder->caption(i));
        } else {
          words = render_examples({c_.image_size, c_.data_seed, 0, std::min<std::int64_t>(c_.examples, 3000)}).first;
        }
        log("training the caption tokenizer (sentencepiece) ...");
        cond_.emplace(Conditioning::create(dir_, words, c_.text));
        c_.text.vocab_size = cond_->tokenizer().vocab_size();
      } else {
        cond_.emplace(Conditioning::load(dir_));
      }
    } else {
      log("loading the frozen text encoders ...");
      cond_.emplace(open_conditioning<Conditioning>(dir_, c_));
    }
    c_.model.in_channels = ae_.latent_channels();
    c_.model.adm_in = cond_->pooled_width();
    c_.model.context_in = cond_->width();
    const int multiple = ae_.factor() * static_cast<int>(c_.model.patch);
    std::vector<data::Bucket> buckets;
    if (folder) {
      // The positional table covers the widest bucket (SD3 crops it to each bucket's grid).
      const int table = c_.model.pos_embed_max_size;
      if (!reads_files)
        for (const auto& b : usable_buckets(c_.image_size, multiple, 1 << 20, c_.max_aspect, "train config"))
          c_.model.pos_embed_max_size = std::max(c_.model.pos_embed_max_size, std::max(b.width, b.height) / multiple);
      if (c_.model.pos_embed_max_size != table)
        log("positional table " + std::to_string(table) + " -> " + std::to_string(c_.model.pos_embed_max_size) +
            " patches a side, for the widest bucket (recorded in config.json)");
      buckets = usable_buckets(c_.image_size, multiple, c_.model.pos_embed_max_size, c_.max_aspect, "train config");
    }
    // Machine-dependent settings, resolved once and recorded with the run (a resume reads them).
    if (c_.precision == "auto") {
      const auto choice = choose_precision();
      c_.precision = choice.precision;
      log("precision auto -> " + choice.precision + " (" + choice.reason + "; recorded in config.json)");
    } else {
      log("precision " + c_.precision + (resume ? " (the run's config.json)" : ""));
    }
    // One worker per usable core, at most one per example of a rank's slice (`diffuse launch` gives
    // each rank its share of the cores).
    if (c_.workers == 0) c_.workers = std::min(usable_hardware_threads(), c_.batch / (group_ ? group_->size() : 1));
    bf16_ = c_.precision == "bf16";
    if (!reads_files) trainer_detail::write_text(dir_ / "config.json", config_to_string(c_) + "\n");

    const auto t0 = std::chrono::steady_clock::now();
    if (!folder) open_shapes_data();
    else open_folder_data(*folder, buckets);
    log("feature cache " + cache_path_ + " (" + std::to_string(features_.examples()) + " examples, " +
        fmt_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()) + ")");
    bucket_weights_ = features_.weights();
    if (group_ && lead_) group_->announce("setup");  // config.json, the tokenizer and the feature cache are there

    torch::manual_seed(c_.seed);
    model_ = P::backbone_type::create(c_.model);
    ema_ = P::backbone_type::create(c_.model);
    {
      torch::NoGradGuard g;
      auto src = model_->parameters(), dst = ema_->parameters();
      for (std::size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
    }
    for (auto& p : ema_->parameters()) p.set_requires_grad(false);
    AdamWSettings adamw;
    adamw.weight_decay = c_.weight_decay;
    adamw.beta1 = c_.adam_beta1;
    adamw.beta2 = c_.adam_beta2;
    opt_ = std::make_unique<FlatAdamW>(model_->parameters(), adamw);  // the model's weights become views of one buffer
    ema_flat_ = flatten_into_one(ema_->parameters());
    if (resume) restore();
    if (group_) {
      // Rank 0's weights, EMA and AdamW moments everywhere (a resumed run's are equal already).
      const auto st = opt_->state();
      group_->broadcast({opt_->parameters(), ema_flat_, st[0].second, st[1].second}, "the initial weights' broadcast");
      log("data parallel over " + std::to_string(group_->size()) + " processes: global batch " + std::to_string(c_.batch) +
          ", " + std::to_string(c_.batch / group_->size()) + (c_.batch % group_->size() ? "-" + std::to_string(c_.batch / group_->size() + 1) : "") +
          " examples a rank; gradients summed over Gloo in buckets of " +
          std::to_string(group_->options().bucket_bytes >> 20) + " MiB");
    }
    start_workers();
    const std::int64_t image_tokens = val_x0_.size(2) / c_.model.patch * (val_x0_.size(3) / c_.model.patch);
    std::int64_t n = 0;
    for (const auto& p : model_->parameters()) n += p.numel();
    log("backbone: " + std::to_string(n) + " parameters, depth " + std::to_string(c_.model.depth) + ", hidden " +
        std::to_string(c_.model.hidden_size()) + ", " + std::to_string(image_tokens) +
        " image tokens (validation bucket) + " + std::to_string(cond_->length()) + " text tokens");
  }

  const TrainConfig& config() const { return c_; }
  Module& model() { return model_; }
  Module& ema() { return ema_; }
  const BucketedFeatures& features() const { return features_; }
  const std::vector<std::string>& sheet_prompts() const { return sheet_prompts_; }
  const Conditioning& conditioning() const { return *cond_; }
  const Autoencoder& autoencoder() const { return ae_; }
  int step() const { return step_; }

  // One optimisation step; returns its record. Throws Error on a non-finite loss or gradient.
  StepRecord train_step() {
    const auto t0 = std::chrono::steady_clock::now();
    model_->train();
    // Named scopes (free unless a profiler runs: benchmarks/train_step.cpp --profile) for the
    // step's phases.
    std::optional<at::RecordFunction> phase;
    auto enter = [&](const char* name) {
      phase.reset();
      phase.emplace(at::RecordScope::USER_SCOPE);
      if (phase->isActive()) phase->before(name);
    };
    enter("diffuse::batch");
    auto gen = at::detail::createCPUGenerator(trainer_detail::step_seed(c_.seed, step_));
    const auto b = c_.batch;
    // A batch of one bucket, chosen in proportion to the buckets' sizes (the shapes world has one).
    const auto& bucket = features_.buckets.size() == 1
                             ? features_.buckets.front()
                             : features_.buckets[static_cast<std::size_t>(
                                   torch::multinomial(bucket_weights_, 1, true, gen).template item<std::int64_t>())];
    const auto idx = example_weights_.defined() ? torch::multinomial(example_weights_, b, true, gen)
                                                : torch::randint(bucket.size(), {b}, gen, torch::kLong);
    const auto x0 = bucket.latents.index_select(0, idx);
    auto ctx = bucket.context.index_select(0, idx);
    auto pooled = bucket.pooled.index_select(0, idx);
    if constexpr (requires { cond_->apply_dropout(ctx, pooled, c_.drop_rate, gen); }) {
      cond_->apply_dropout(ctx, pooled, c_.drop_rate, gen);  // the policy knows its encoders' slices
    } else {
      const auto [keep_ctx, keep_pooled] = conditioning_keep_masks(b, c_.drop_rate, gen);
      ctx = ctx * keep_ctx.view({b, 1, 1});
      pooled = pooled * keep_pooled.view({b, 1});
    }
    const auto t = trainer_detail::sample_training_t(objective_, c_.timestep_shift, b, gen, x0);
    const auto noise = torch::randn(x0.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
    const auto in = objective_.inputs(x0, noise, t);
    // This rank's rows of the global batch: [lo, lo + n) (all of it in one process).
    const std::int64_t lo = group_ ? b * group_->rank() / group_->size() : 0;
    const std::int64_t n = group_ ? b * (group_->rank() + 1) / group_->size() - lo : b;
    const auto mine = [&](const torch::Tensor& x) { return group_ ? x.narrow(0, lo, n) : x; };
    const double lr = lr_at(step_);
    opt_->zero_grad();
    double loss_v = 0;
    if (!pool_) {
      torch::Tensor out;
      enter("diffuse::forward");
      {
        CpuAutocast amp(bf16_);
        out = model_->forward(mine(in.z), mine(t) * 1000.0, mine(pooled), mine(ctx));
      }
      auto loss = objective_.loss(out.to(torch::kFloat32), mine(x0), mine(noise), mine(t)).mean();
      if (group_) loss = loss * (static_cast<double>(n) / static_cast<double>(b));  // this rank's share of the batch mean
      enter("diffuse::backward");
      loss.backward();
      loss_v = loss.template item<double>();
    } else {
      // Shard k of the batch on worker k and its replica; each shard's mean loss weighted by its
      // share of the batch, so the replicas' gradients add up to the whole batch's, in a fixed order.
      enter("diffuse::shards");
      std::vector<double> shard_loss(static_cast<std::size_t>(pool_->size()));
      pool_->run([&](int k) {
        const std::int64_t from = n * k / pool_->size(), to = n * (k + 1) / pool_->size();
        auto& m = k == 0 ? model_ : replicas_[static_cast<std::size_t>(k - 1)];
        m->train();
        auto part = [&](const torch::Tensor& x) { return x.narrow(0, lo + from, to - from); };
        torch::Tensor out;
        {
          CpuAutocast amp(bf16_);
          out = m->forward(part(in.z), part(t) * 1000.0, part(pooled), part(ctx));
        }
        const auto loss = objective_.loss(out.to(torch::kFloat32), part(x0), part(noise), part(t)).mean() *
                          (static_cast<double>(to - from) / static_cast<double>(b));
        loss.backward();
        shard_loss[static_cast<std::size_t>(k)] = loss.template item<double>();
      });
      torch::NoGradGuard g;
      for (std::size_t k = 0; k < replica_grads_.size(); ++k) {
        opt_->gradients().add_(replica_grads_[k]);
        replica_grads_[k].zero_();
      }
      for (double l : shard_loss) loss_v += l;
    }
    if (group_) {
      // The ranks' gradients and losses, each weighted by its share, add up to the global batch's.
      enter("diffuse::all_reduce");
      group_->sum(opt_->gradients(), step_ + 1, "the gradient exchange");
      auto l = torch::tensor({loss_v}, torch::kFloat64);
      group_->sum(l, step_ + 1, "the loss exchange");
      loss_v = l.template item<double>();
    }
    enter("diffuse::clip");
    const double norm = opt_->clip_grad_norm(c_.grad_clip);
    if (!std::isfinite(loss_v) || !std::isfinite(norm)) non_finite(loss_v, norm);
    enter("diffuse::optimizer");
    // AdamW and the EMA (decay with the usual short warm-up of the average) on the flat buffers
    opt_->step(lr, &ema_flat_, std::min(c_.ema_decay, (1.0 + step_) / (10.0 + step_)));
    phase.reset();
    ++step_;
    StepRecord r{step_, loss_v, norm, lr, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
    return r;
  }

  // Mean loss over the fixed validation batch and t grid (8 midpoints), for the model and its EMA.
  std::pair<double, double> validation_loss() {
    torch::NoGradGuard g;
    auto run = [&](Module& m) {
      m->eval();
      auto gen = at::detail::createCPUGenerator(c_.seed ^ 0x76616cull);
      double total = 0;
      for (int k = 0; k < 8; ++k) {
        const auto t = torch::full({val_x0_.size(0)}, (k + 0.5) / 8.0);
        const auto noise = torch::randn(val_x0_.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
        const auto in = objective_.inputs(val_x0_, noise, t);
        total += objective_.loss(m->forward(in.z, t * 1000.0, val_pooled_, val_ctx_), val_x0_, noise, t).mean().template item<double>();
      }
      return total / 8;
    };
    return {run(model_), run(ema_)};
  }

  torch::Tensor sample(const std::vector<std::string>& prompts, std::uint64_t seed) {
    typename P::sampler_type sampler{};
    if constexpr (requires { sampler.schedule.shift; }) sampler.schedule.shift = c_.sample_shift;
    pipeline::GenerateOptions o;
    o.steps = c_.sample_steps;
    o.cfg = c_.sample_cfg;
    o.seed = seed;
    o.height = o.width = c_.image_size;
    return pipeline::generate<P>(ema_, *cond_, ae_, sampler, objective_, prompts, o);
  }

  // Trains until the budget (steps or minutes, counted over resumes) or keep_going says stop.
  TrainResult run() {
    namespace fs = std::filesystem;
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const double base = elapsed_;
    auto now = [&] { return base + std::chrono::duration<double>(clock::now() - start).count(); };
    double last_ckpt = now(), window_loss = 0, window_time = 0, step_seconds = 0;  // step_seconds: steps and the control exchange
    const double collective_before = group_ ? group_->collective_seconds() : 0;
    int window = 0;
    std::size_t next_snapshot = 0;
    while (next_snapshot < c_.snapshot_minutes.size() && c_.snapshot_minutes[next_snapshot] * 60 <= elapsed_) ++next_snapshot;
    TrainResult res;
    res.resumed = step_ > 0;
    // elapsed_ is rank 0's clock in a run of several processes, so every rank stops at the same step.
    auto done = [&] { return c_.minutes > 0 ? elapsed_ >= c_.minutes * 60 : step_ >= c_.steps; };
    // Times a step or the control sum; a PeerError (a rank died or hung) gains the note that the
    // last checkpoint is intact.
    auto timed = [&](auto&& f) {
      const auto t0 = clock::now();
      try {
        f();
      } catch (const PeerError& e) {
        throw PeerError(std::string(e.what()) + ". " + last_checkpoint_note());
      }
      step_seconds += std::chrono::duration<double>(clock::now() - t0).count();
    };
    while (!done()) {
      StepRecord r;
      timed([&] { r = train_step(); });
      elapsed_ = now();
      window_loss += r.loss, window_time += r.seconds, ++window;
      res.final_loss = r.loss;
      bool stop = false;
      if (lead_) {  // rank 0 alone logs and writes the run's files
        metrics_line({{"step", r.step}, {"loss", r.loss}, {"grad_norm", r.grad_norm}, {"lr", r.lr}, {"seconds", elapsed_}});
        if (step_ % c_.log_every == 0) {
          const double ips = window / std::max(window_time, 1e-9);
          std::string eta;
          if (c_.minutes > 0) eta = fmt_seconds(c_.minutes * 60 - elapsed_);
          else eta = fmt_seconds((c_.steps - step_) / std::max(ips, 1e-9));
          char buf[256];
          std::snprintf(buf, sizeof buf, "step %d%s  loss %.4f  lr %.2g  %.2f it/s  %.0f img/s  elapsed %s  ETA %s", step_,
                        c_.minutes > 0 ? "" : ("/" + std::to_string(c_.steps)).c_str(), window_loss / window, r.lr, ips,
                        ips * c_.batch, fmt_seconds(elapsed_).c_str(), eta.c_str());
          log(buf);
          window_loss = window_time = 0, window = 0;
        }
        if (c_.validate_every > 0 && step_ % c_.validate_every == 0) validate_now();
        while (next_snapshot < c_.snapshot_minutes.size() && elapsed_ >= c_.snapshot_minutes[next_snapshot] * 60) {
          snapshot(c_.snapshot_minutes[next_snapshot]);
          ++next_snapshot;
        }
      }
      stop = cb_.keep_going && !cb_.keep_going(step_);
      if (lead_) {
        const bool periodic = (c_.checkpoint_every > 0 && step_ % c_.checkpoint_every == 0) ||
                              (c_.checkpoint_minutes > 0 && elapsed_ - last_ckpt >= c_.checkpoint_minutes * 60);
        if (periodic && !stop && !done()) {
          save_checkpoint();
          write_plots();  // loss curve and sample sheet during training too
          last_ckpt = elapsed_;
        }
      }
      if (group_) {
        // Rank 0's clock and any rank's wish to stop, so that every rank ends at the same step.
        auto control = torch::tensor({lead_ ? elapsed_ : 0.0, stop ? 1.0 : 0.0}, torch::kFloat64);
        timed([&] { group_->sum(control, step_, "the step's control exchange"); });
        elapsed_ = control[0].template item<double>();
        stop = control[1].template item<double>() > 0;
      }
      if (stop) break;
    }
    res.steps = step_;
    if (group_ && step_seconds > 0) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "rank 0's steps: %.1f s, of which %.2f s (%.1f%%) in collectives (gradients, loss, control)", step_seconds,
                    group_->collective_seconds() - collective_before, 100.0 * (group_->collective_seconds() - collective_before) / step_seconds);
      log(buf);
    }
    if (!lead_) return res;
    elapsed_ = now();
    std::tie(res.val_loss, res.val_loss_ema) = validate_now();
    res.checkpoint = save_checkpoint();
    write_plots();
    res.seconds = elapsed_;
    return res;
  }

  // Writes ckpt-<step>/ and then state.json pointing at it; older checkpoints are removed after.
  std::filesystem::path save_checkpoint() {
    namespace fs = std::filesystem;
    char name[32];
    std::snprintf(name, sizeof name, "ckpt-%07d", step_);
    const auto dir = dir_ / name;
    if (fs::exists(dir)) fs::remove_all(dir);  // a leftover of an interrupted save
    fs::create_directories(dir);
    const std::map<std::string, std::string> meta{{"diffuse.recipe", P::describe()}, {"diffuse.step", std::to_string(step_)}};
    io::save_safetensors(dir / "model.safetensors", trainer_detail::named(*model_), meta);
    io::save_safetensors(dir / "ema.safetensors", trainer_detail::named(*ema_), meta);
    io::save_safetensors(dir / "optimizer.safetensors", opt_->state(), meta);
    nlohmann::json st{{"step", step_}, {"elapsed_seconds", elapsed_}, {"checkpoint", name}, {"cache_key", cache_key_},
                      {"recipe", P::describe()}};
    trainer_detail::write_text(dir_ / "state.json", st.dump(2) + "\n");
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.is_directory() && e.path().filename().string().rfind("ckpt-", 0) == 0 && e.path().filename() != name)
        fs::remove_all(e.path());
    return dir;
  }

  void write_plots() {
    namespace fs = std::filesystem;
    eval::Series train{"train loss (mean of 50 steps)", {}, {}, eval::palette(0)}, val{"validation loss", {}, {}, eval::palette(1)},
        vema{"validation loss, EMA", {}, {}, eval::palette(2)};
    std::ifstream in(dir_ / "metrics.jsonl");
    std::string line;
    double acc = 0;
    int n = 0;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("loss")) {
        acc += j["loss"].get<double>(), ++n;
        if (n == 50) train.x.push_back(j["step"].get<double>()), train.y.push_back(acc / n), acc = 0, n = 0;
      }
      if (j.contains("val_loss")) {
        val.x.push_back(j["step"].get<double>()), val.y.push_back(j["val_loss"].get<double>());
        vema.x.push_back(j["step"].get<double>()), vema.y.push_back(j["val_loss_ema"].get<double>());
      }
    }
    eval::Panel p{"rectified-flow loss", "step", "loss", {train, val, vema}, {}, 0.0};
    io::write_png(dir_ / "loss.png", eval::render_plot({p}));
    const auto imgs = sample(sheet_prompts_, 0);
    io::write_png(dir_ / "samples.png", pipeline::image_grid(imgs, 6, 4),
                  {{"prompts", nlohmann::json(sheet_prompts_).dump()}, {"step", std::to_string(step_)}});
  }

 private:
  double lr_at(int step) const {
    return scheduled_lr(c_.lr, budget_progress(step, c_.steps, elapsed_, c_.minutes), c_.lr_decay,
                        warmup_factor(step, c_.warmup_steps));
  }
  [[noreturn]] void non_finite(double loss, double norm) {
    std::string where = "none (the loss itself)";
    for (const auto& p : model_->named_parameters(true))
      if (p.value().grad().defined() && !torch::isfinite(p.value().grad()).all().template item<bool>()) {
        where = p.key();
        break;
      }
    if (lead_) metrics_line({{"step", step_ + 1}, {"event", "non-finite"}, {"loss", std::to_string(loss)}, {"grad_norm", std::to_string(norm)}});
    const auto st = last_checkpoint_note();
    throw Error("training stopped at step " + std::to_string(step_ + 1) + ": non-finite loss " + std::to_string(loss) +
                " / gradient norm " + std::to_string(norm) + "; first non-finite gradient: " + where +
                ". The weights were not updated. " + st + " Lower lr (now " + std::to_string(c_.lr) +
                ") or raise warmup_steps.");
  }
  std::string last_checkpoint_note() const {
    return std::filesystem::exists(dir_ / "state.json")
               ? "The last checkpoint (state.json) is intact and --resume continues from it (with any number of processes)."
               : "No checkpoint was written yet.";
  }
  std::pair<double, double> validate_now() {
    const auto [v, ve] = validation_loss();
    metrics_line({{"step", step_}, {"val_loss", v}, {"val_loss_ema", ve}, {"seconds", elapsed_}});
    char buf[128];
    std::snprintf(buf, sizeof buf, "step %d  validation loss %.4f (EMA %.4f)", step_, v, ve);
    log(buf);
    return {v, ve};
  }
  void snapshot(double minutes) {
    std::filesystem::create_directories(dir_ / "snapshots");
    char name[64];
    std::snprintf(name, sizeof name, "ema-%gmin.safetensors", minutes);
    io::save_safetensors(dir_ / "snapshots" / name, trainer_detail::named(*ema_),
                         {{"diffuse.step", std::to_string(step_)}, {"diffuse.minutes", std::to_string(elapsed_ / 60)}});
    log("snapshot " + std::string(name) + " at step " + std::to_string(step_));
  }
  void restore() {
    namespace fs = std::filesystem;
    std::ifstream in(dir_ / "state.json");
    const auto st = nlohmann::json::parse(in, nullptr, false);
    if (st.is_discarded() || !st.contains("step") || !st.contains("checkpoint"))
      throw InputError((dir_ / "state.json").string() + ": not a valid training state");
    const auto ck = dir_ / st["checkpoint"].get<std::string>();
    if (fs::is_regular_file(ck / "optimizer.pt") && !fs::is_regular_file(ck / "optimizer.safetensors"))
      throw InputError(ck.string() + ": written by an older diffuse (optimizer.pt, LibTorch's AdamW); its runs cannot be resumed by this one");
    for (const char* f : {"model.safetensors", "ema.safetensors", "optimizer.safetensors"})
      if (!fs::is_regular_file(ck / f)) throw InputError((ck / f).string() + ": checkpoint file missing");
    trainer_detail::load_into(*model_, ck / "model.safetensors");
    trainer_detail::load_into(*ema_, ck / "ema.safetensors");
    load_adamw_state(*opt_, ck / "optimizer.safetensors");
    step_ = st["step"].get<int>();
    elapsed_ = st.value("elapsed_seconds", 0.0);
    if (lead_) metrics_.forget_after(step_);  // those steps run again
    log("resumed at step " + std::to_string(step_) + " from " + ck.string());
  }
  // The shapes world: the examples [0, examples) encoded into the feature cache, the category
  // mix, and a held-out validation batch (the examples after them).
  void open_shapes_data() {
    ShapesDataSpec spec{c_.image_size, c_.data_seed, 0, c_.examples};
    auto cache = open_feature_cache(dir_ / "cache", spec, *cond_, ae_, [&](std::int64_t done, std::int64_t total) {
      if (done == total || done % 4096 < 512) log("feature cache: " + std::to_string(done) + "/" + std::to_string(total) + " examples");
    });
    features_.buckets.push_back({{c_.image_size, c_.image_size}, cache.latents, cache.context, cache.pooled});
    cache_key_ = cache.key, cache_path_ = cache.path;
    example_weights_ = shapes_example_weights(c_.category_weights, spec.first, cache.size());
    ShapesDataSpec vspec{c_.image_size, c_.data_seed, c_.examples, c_.validation_examples};
    auto [vcap, vimg] = render_examples(vspec);
    val_x0_ = ae_.encode(vimg);
    const auto vf = cond_->encode(vcap);
    val_ctx_ = vf.context, val_pooled_ = vf.pooled;
    sheet_prompts_ = c_.sample_prompts.empty() ? sample_sheet_prompts() : c_.sample_prompts;
  }

  // An image folder: its buckets encoded into the feature cache; validation on the first
  // examples of the largest bucket (training images: a folder has no held-out split).
  void open_folder_data(const data::ImageFolder& folder, const std::vector<data::Bucket>& buckets) {
    auto cache = open_folder_feature_cache(dir_ / "cache", folder, buckets, *cond_, ae_, [&](const std::string& s) { log(s); });
    features_ = std::move(cache.features);
    cache_key_ = cache.key, cache_path_ = cache.path;
    const auto& v = features_.largest();
    const auto n = std::min<std::int64_t>(v.size(), c_.validation_examples);
    val_x0_ = v.latents.narrow(0, 0, n), val_ctx_ = v.context.narrow(0, 0, n), val_pooled_ = v.pooled.narrow(0, 0, n);
    sheet_prompts_ = c_.sample_prompts;
    for (std::size_t i = 0; i < folder.size() && c_.sample_prompts.empty() && i < 12; ++i) sheet_prompts_.push_back(folder.caption(i));
  }

  // Worker threads for the batch's shards (config `workers`; 0: one per usable core, at most one per
  // example). Worker 0 runs the model itself; each other worker a replica whose parameters are
  // views of the model's (so the optimizer's update reaches all) with gradients of its own.
  void start_workers() {
    const int n = std::min(c_.workers, c_.batch / (group_ ? group_->size() : 1));  // resolved in the constructor; <= a rank's rows
    if (n <= 1) return;
    for (int k = 1; k < n; ++k) {
      auto r = P::backbone_type::create(c_.model);
      replica_grads_.push_back(share_parameters(model_, r));
      replicas_.push_back(r);
    }
    pool_ = std::make_unique<ShardPool>(n);
    log("batch split over " + std::to_string(n) + " worker threads (one intra-op thread each)");
  }
  void metrics_line(const nlohmann::json& j) { metrics_.append(j); }
  void log(const std::string& s) const {
    if (cb_.log && lead_) cb_.log(s);
  }
  static std::string fmt_seconds(double s) {
    char b[32];
    const int t = static_cast<int>(std::max(0.0, s));
    if (t >= 3600) std::snprintf(b, sizeof b, "%dh%02dm", t / 3600, t / 60 % 60);
    else std::snprintf(b, sizeof b, "%dm%02ds", t / 60, t % 60);
    return b;
  }

  std::filesystem::path dir_;
  TrainConfig c_;
  bool bf16_ = false;  // products in bf16 autocast: precision "bf16" (or "auto" resolved to it)
  TrainCallbacks cb_;
  std::shared_ptr<ProcessGroup> group_;  // null: one process
  bool lead_ = true;                     // rank 0 (or one process): logs and writes the run's files
  Autoencoder ae_;
  std::optional<Conditioning> cond_;
  typename P::objective_type objective_{};
  BucketedFeatures features_;  // the training data, encoded: one bucket for the shapes world
  torch::Tensor bucket_weights_;
  std::string cache_key_, cache_path_;
  std::vector<std::string> sheet_prompts_;  // the sample sheet's prompts
  torch::Tensor val_x0_, val_ctx_, val_pooled_;
  torch::Tensor example_weights_;  // per cached example, from category_weights; undefined: uniform
  Module model_{nullptr}, ema_{nullptr};
  std::unique_ptr<FlatAdamW> opt_;
  torch::Tensor ema_flat_;  // the EMA model's weights, as one buffer
  std::vector<Module> replicas_;    // workers 1.. : the model's weights, their own gradients
  std::vector<torch::Tensor> replica_grads_;  // each replica's gradients, as one buffer
  std::unique_ptr<ShardPool> pool_;           // null: the whole batch on the calling thread
  int step_ = 0;
  double elapsed_ = 0;
  MetricsFile metrics_{dir_ / "metrics.jsonl"};
};

}  // namespace diffuse::training
