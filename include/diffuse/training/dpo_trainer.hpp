#pragma once
// Diffusion-DPO with LoRA (Wallace et al. 2023; the SD3 paper's preference stage, LoRA rank 128
// on the pretrained MM-DiT): the base model is frozen, adapters (nn/lora.hpp) are trained on
// preference pairs with the loss of training/dpo_loss.hpp. The reference model is the same base
// with every adapter at strength 0, run in the same forward code under no-grad: no second copy of
// the weights. Chosen and rejected latents share the noise and t of their pair.
//
// The images are cut to the square of `resolution` and encoded once with the base's frozen
// autoencoder, the prompts with its text encoders. Everything random in step s comes from a
// generator seeded by (seed, s); runs resume from DIR/state/ (training/adapter_checkpoint.hpp).
//
// The output folder: dpo_config.json, lora.safetensors, lora_kohya.safetensors, state/,
// metrics.jsonl (per step: loss, accuracy, margin, the four errors), loss.png (loss and margin).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "diffuse/core/config.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/data/aspect_buckets.hpp"
#include "diffuse/data/preference_pairs.hpp"
#include "diffuse/eval/plot.hpp"
#include "diffuse/io/image_file.hpp"
#include "diffuse/io/image_tensor.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/training/adapter_checkpoint.hpp"
#include "diffuse/training/dpo_loss.hpp"
#include "diffuse/training/lora_trainer.hpp"  // LoraBase

namespace diffuse::training {

struct DpoTrainConfig {
  BOOST_HANA_DEFINE_STRUCT(DpoTrainConfig,
                           (std::string, objective),  // "rf/lognorm(m, s)": the base pipeline's process and distribution
                           (double, timestep_shift),  // SD3 eq. 23 on the training t; 0: the base's
                           (double, beta),            // the DPO temperature (training/dpo_loss.hpp convention)
                           (int, rank), (double, alpha),  // scale alpha / rank; alpha 0: = rank
                           (std::vector<std::string>, targets),  // attention | all-linear | module-name suffixes
                           (int, resolution),  // images cut to this square; 0: the base's training resolution
                           (int, batch), (double, lr), (int, warmup_steps), (std::string, lr_decay),
                           (double, weight_decay), (double, grad_clip),
                           (std::string, precision),  // f32 | bf16 | auto, for a float32 base (autocast)
                           (int, steps), (double, minutes), (std::uint64_t, seed), (int, log_every),
                           (int, checkpoint_every),  // steps; 0: only at the end
                           (std::string, base_model), (std::string, pairs));  // records, not read back

  // The SD3 paper's rank 128 on attention; beta of the order Wallace et al. used (docs/dpo.md has
  // what was measured here)
  static DpoTrainConfig defaults() {
    return {.objective = "rf/lognorm(0, 1)", .timestep_shift = 0, .beta = 5000, .rank = 128, .alpha = 0,
            .targets = {"attention"}, .resolution = 0, .batch = 8, .lr = 1e-4, .warmup_steps = 0, .lr_decay = "constant",
            .weight_decay = 0.0, .grad_clip = 1.0, .precision = "auto", .steps = 500, .minutes = 0, .seed = 0,
            .log_every = 10, .checkpoint_every = 100, .base_model = "", .pairs = ""};
  }
  void validate() const {
    auto bad = [](const std::string& m) { throw InputError("DPO training: " + m); };
    if (!(beta > 0) || !std::isfinite(beta)) bad("beta must be positive");
    if (rank < 1) bad("rank must be at least 1");
    if (!(alpha >= 0) || !std::isfinite(alpha)) bad("alpha must be >= 0 (0: the rank)");
    if (targets.empty()) bad("targets must name at least one layer group");
    if (resolution < 0) bad("resolution must be >= 0 (0: the base model's)");
    if (batch < 1) bad("batch must be at least 1");
    if (!(lr > 0) || warmup_steps < 0 || weight_decay < 0 || grad_clip < 0) bad("lr > 0, warmup_steps, weight_decay, grad_clip >= 0");
    if (!(timestep_shift >= 0)) bad("timestep_shift must be >= 0 (0: the base model's)");
    if (precision != "f32" && precision != "bf16" && precision != "auto") bad("precision must be f32, bf16 or auto");
    if (steps < 0 || minutes < 0 || (steps == 0 && minutes == 0)) bad("give steps > 0 or minutes > 0");
    if (log_every < 1 || checkpoint_every < 0) bad("log_every >= 1, checkpoint_every >= 0");
    check_lr_decay(lr_decay, "DPO training: lr_decay");
  }
};

struct DpoStepRecord {
  int step = 0;
  double lr = 0, grad_norm = 0, seconds = 0;
  DpoTerms terms;  // loss as a tensor is dropped after the step; loss_value holds it
  double loss_value = 0;
};

template <class Objective, LoraBase Base>
class DpoTrainer {
 public:
  DpoTrainer(Base& base, const std::vector<data::PreferencePair>& pairs, std::filesystem::path dir, DpoTrainConfig config,
             bool resume, TrainCallbacks cb = {})
      : base_(base), dir_(std::move(dir)), c_(std::move(config)), cb_(std::move(cb)) {
    namespace fs = std::filesystem;
    const bool has_run = fs::exists(dir_ / "state" / "state.json");
    if (resume && !has_run) throw InputError(dir_.string() + ": nothing to resume (no state/state.json)");
    if (!resume && has_run)
      throw InputError(dir_.string() + ": already holds a DPO run; pass --resume to continue it or choose another --out");
    if (resume) {
      auto saved = load_config<DpoTrainConfig>(dir_ / "dpo_config.json", DpoTrainConfig::defaults());
      saved.steps = c_.steps, saved.minutes = c_.minutes;
      c_ = saved;
    }
    if (pairs.empty()) throw InputError("DPO training: no preference pairs");
    if (c_.alpha == 0) c_.alpha = c_.rank;
    if (c_.resolution == 0) c_.resolution = base_.native_resolution();
    if (c_.timestep_shift == 0) c_.timestep_shift = base_.training_shift();
    if (c_.precision == "auto") c_.precision = choose_precision().precision;
    c_.validate();
    if (c_.resolution % base_.pixel_multiple() != 0)
      throw InputError("DPO training: resolution " + std::to_string(c_.resolution) + " must be a multiple of " +
                       std::to_string(base_.pixel_multiple()));
    objective_ = objective_from_spec<Objective>(c_.objective);
    fs::create_directories(dir_ / "state");
    if (!resume) trainer_detail::write_text(dir_ / "dpo_config.json", config_to_string(c_) + "\n");
    encode(pairs);
    auto& model = base_.backbone();
    dtype_ = model->parameters().front().scalar_type();
    autocast_ = dtype_ == torch::kFloat32 && c_.precision == "bf16";
    torch::manual_seed(c_.seed);
    adapters_ = nn::add_lora_adapters(*model, c_.targets, c_.rank, c_.alpha);
    std::vector<torch::Tensor> params;
    std::int64_t n = 0;
    for (auto& [name, a] : adapters_)
      for (auto& p : a->parameters()) params.push_back(p), n += p.numel();
    AdamWSettings s;
    s.weight_decay = c_.weight_decay;
    opt_ = std::make_unique<FlatAdamW>(params, s);
    log("DPO: " + std::to_string(chosen_.size(0)) + " pairs, beta " + fmt(c_.beta) + "; LoRA rank " + std::to_string(c_.rank) +
        " on " + std::to_string(adapters_.size()) + " Linear layers (" + std::to_string(n) + " trained parameters)");
    if (resume) {
      const auto st = restore_adapter_run(dir_, adapters_, *opt_, "DPO");
      step_ = st.step, elapsed_ = st.elapsed_seconds;
      metrics_.forget_after(step_);
      log("resumed at step " + std::to_string(step_));
    }
  }

  const DpoTrainConfig& config() const { return c_; }
  int step() const { return step_; }
  std::int64_t pairs() const { return chosen_.size(0); }

  // The DPO terms of examples `idx` at t with noise (one noise for both images of a pair). With
  // autograd when `grad`, else under no-grad.
  DpoTerms terms(const torch::Tensor& idx, const torch::Tensor& t, const torch::Tensor& noise, bool grad) {
    const auto w = chosen_.index_select(0, idx), l = rejected_.index_select(0, idx);
    const auto ctx = context_.index_select(0, idx), pooled = pooled_.index_select(0, idx);
    const auto b = idx.size(0);
    const auto x0 = torch::cat({w, l}), n2 = torch::cat({noise, noise}), t2 = torch::cat({t, t});
    const auto c2 = torch::cat({ctx, ctx}), p2 = torch::cat({pooled, pooled});
    torch::Tensor ref;
    {
      torch::NoGradGuard g;
      set_strength(0.0);  // the reference: the same base, adapters off
      ref = errors(x0, n2, t2, c2, p2);
      set_strength(1.0);
    }
    torch::Tensor err;
    if (grad) {
      err = errors(x0, n2, t2, c2, p2);
    } else {
      torch::NoGradGuard g;
      err = errors(x0, n2, t2, c2, p2);
    }
    return dpo_loss(err.narrow(0, 0, b), err.narrow(0, b, b), ref.narrow(0, 0, b), ref.narrow(0, b, b), c_.beta);
  }

  DpoStepRecord train_step() {
    const auto t0 = std::chrono::steady_clock::now();
    auto gen = at::detail::createCPUGenerator(trainer_detail::step_seed(c_.seed ^ 0x64706full, step_));
    const auto idx = torch::randint(chosen_.size(0), {c_.batch}, gen, torch::kLong);
    const auto t = trainer_detail::sample_training_t(objective_, c_.timestep_shift, c_.batch, gen, chosen_);
    const auto noise = torch::randn({c_.batch, chosen_.size(1), chosen_.size(2), chosen_.size(3)}, gen,
                                    torch::TensorOptions().dtype(torch::kFloat32));
    const double lr = scheduled_lr(c_.lr, budget_progress(step_, c_.steps, elapsed_, c_.minutes), c_.lr_decay,
                                   warmup_factor(step_, c_.warmup_steps));
    opt_->zero_grad();
    base_.backbone()->train();
    auto d = terms(idx, t, noise, true);
    d.loss.backward();
    const double loss_v = d.loss.template item<double>();
    const double norm = opt_->clip_grad_norm(c_.grad_clip);
    if (!std::isfinite(loss_v) || !std::isfinite(norm))
      throw Error("DPO training stopped at step " + std::to_string(step_ + 1) + ": non-finite loss " + std::to_string(loss_v) +
                  " / gradient norm " + std::to_string(norm) + "; the adapters were not updated. Lower lr (now " + fmt(c_.lr) +
                  ") or beta (" + fmt(c_.beta) + ").");
    opt_->step(lr);
    ++step_;
    DpoStepRecord r;
    r.step = step_, r.lr = lr, r.grad_norm = norm, r.loss_value = loss_v;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    d.loss = torch::Tensor();
    r.terms = d;
    return r;
  }

  struct Result {
    int steps = 0;
    double seconds = 0, final_loss = 0, final_accuracy = 0;
  };

  // Trains until the budget (steps or minutes, counted over resumes) or keep_going says stop.
  Result run() {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const double base_elapsed = elapsed_;
    auto now = [&] { return base_elapsed + std::chrono::duration<double>(clock::now() - start).count(); };
    auto done = [&] { return c_.minutes > 0 ? now() >= c_.minutes * 60 : step_ >= c_.steps; };
    Result res;
    double w_loss = 0, w_acc = 0, w_margin = 0, w_time = 0;
    int window = 0;
    while (!done()) {
      const auto r = train_step();
      elapsed_ = now();
      const auto& d = r.terms;
      metrics_.append({{"step", r.step}, {"loss", r.loss_value}, {"accuracy", d.accuracy}, {"margin", d.margin},
                       {"chosen_error", d.chosen_error}, {"rejected_error", d.rejected_error},
                       {"chosen_ref_error", d.chosen_ref_error}, {"rejected_ref_error", d.rejected_ref_error},
                       {"grad_norm", r.grad_norm}, {"lr", r.lr}, {"seconds", elapsed_}});
      res.final_loss = r.loss_value, res.final_accuracy = d.accuracy;
      w_loss += r.loss_value, w_acc += d.accuracy, w_margin += d.margin, w_time += r.seconds, ++window;
      if (step_ % c_.log_every == 0) {
        char buf[220];
        std::snprintf(buf, sizeof buf, "step %d%s  loss %.4f  accuracy %.2f  margin %.3g  lr %.2g  %.2f s/step", step_,
                      c_.minutes > 0 ? "" : ("/" + std::to_string(c_.steps)).c_str(), w_loss / window, w_acc / window,
                      w_margin / window, r.lr, w_time / window);
        log(buf);
        w_loss = w_acc = w_margin = w_time = 0, window = 0;
      }
      const bool stop = cb_.keep_going && !cb_.keep_going(step_);
      if (c_.checkpoint_every > 0 && step_ % c_.checkpoint_every == 0 && !stop && !done()) save();
      if (stop) break;
    }
    elapsed_ = now();
    save();
    res.steps = step_, res.seconds = elapsed_;
    return res;
  }

  void save() {
    save_adapter_run(dir_, base_.backbone(), adapters_, *opt_, {step_, elapsed_});
    write_plot();
    log("step " + std::to_string(step_) + ": wrote " + (dir_ / "lora.safetensors").string() + " and lora_kohya.safetensors");
  }

 private:
  // Per-example objective errors of the base + adapters at their current strength.
  torch::Tensor errors(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& t, const torch::Tensor& ctx,
                       const torch::Tensor& pooled) {
    auto& model = base_.backbone();
    const auto in = objective_.inputs(x0, noise, t);
    torch::Tensor out;
    {
      CpuAutocast amp(autocast_);
      out = model->forward(in.z.to(dtype_), t * 1000.0, pooled.to(dtype_), ctx.to(dtype_));
    }
    return objective_.loss(out.to(torch::kFloat32), x0, noise, t);
  }
  void set_strength(double s) {
    for (auto& [name, a] : adapters_) a->strength = s;
  }

  void encode(const std::vector<data::PreferencePair>& pairs) {
    const data::Bucket square{c_.resolution, c_.resolution};
    auto load = [&](const std::filesystem::path& f) { return io::from_rgb(data::fit_to_bucket(io::read_image(f), square)); };
    std::vector<torch::Tensor> w, l, ctx, pooled;
    torch::NoGradGuard g;
    for (std::size_t lo = 0; lo < pairs.size(); lo += 8) {
      const auto hi = std::min(pairs.size(), lo + 8);
      std::vector<torch::Tensor> wi, li;
      std::vector<std::string> prompts;
      for (std::size_t i = lo; i < hi; ++i) {
        try {
          wi.push_back(load(pairs[i].chosen));
          li.push_back(load(pairs[i].rejected));
        } catch (const InputError& e) {
          throw InputError("pair " + std::to_string(i + 1) + ": " + e.what());
        }
        prompts.push_back(pairs[i].prompt);
      }
      w.push_back(base_.encode_images(torch::stack(wi)).to(torch::kFloat32));
      l.push_back(base_.encode_images(torch::stack(li)).to(torch::kFloat32));
      const auto f = base_.encode_text(prompts);
      ctx.push_back(f.context.to(torch::kFloat32)), pooled.push_back(f.pooled.to(torch::kFloat32));
    }
    chosen_ = torch::cat(w), rejected_ = torch::cat(l), context_ = torch::cat(ctx), pooled_ = torch::cat(pooled);
  }

  void write_plot() {
    eval::Series loss{"DPO loss (mean of 10 steps)", {}, {}, eval::palette(0)}, acc{"implicit accuracy", {}, {}, eval::palette(1)};
    std::ifstream in(dir_ / "metrics.jsonl");
    double a = 0, b = 0;
    int n = 0;
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("loss") || !j.contains("accuracy")) continue;
      a += j["loss"].get<double>(), b += j["accuracy"].get<double>(), ++n;
      if (n == 10) {
        loss.x.push_back(j["step"].get<double>()), loss.y.push_back(a / n);
        acc.x.push_back(j["step"].get<double>()), acc.y.push_back(b / n);
        a = b = 0, n = 0;
      }
    }
    if (loss.x.size() < 2) return;
    io::write_png(dir_ / "loss.png", eval::render_plot({eval::Panel{"DPO loss", "step", "loss", {loss}, {}, 0.0},
                                                        eval::Panel{"implicit accuracy", "step", "share", {acc}, {}, 0.0}}));
  }

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
  DpoTrainConfig c_;
  TrainCallbacks cb_;
  Objective objective_{};
  torch::Tensor chosen_, rejected_, context_, pooled_;  // encoded pairs, float32
  NamedAdapters adapters_;
  std::unique_ptr<FlatAdamW> opt_;
  torch::ScalarType dtype_ = torch::kFloat32;
  bool autocast_ = false;
  int step_ = 0;
  double elapsed_ = 0;
  MetricsFile metrics_{dir_ / "metrics.jsonl"};
};

}  // namespace diffuse::training
