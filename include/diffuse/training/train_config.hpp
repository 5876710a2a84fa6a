#pragma once
// The shapes trainer's configuration (training/trainer.hpp): a plain struct reflected for its
// JSON form (config.json, `diffuse train --config`), its defaults and their validation.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "diffuse/backbone/mmdit_config.hpp"
#include "diffuse/core/config.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/data/shapes_dataset.hpp"
#include "diffuse/encoders/caption_encoder.hpp"
#include "diffuse/sampling/guidance.hpp"
#include "diffuse/training/lr_schedule.hpp"

namespace diffuse::training {

// The released SD3 text encoders for a pipeline whose conditioning slot is SD3's text stack
// (encoders::SD3TextConditioning): weight files (one file may hold several, as SD3's all-in-one
// checkpoint; empty: that encoder absent, zeros in its place), the tokenizers' folder and T5's
// token count. Unused by the shapes caption encoder, which is trained with the model.
struct TextStackFiles {
  BOOST_HANA_DEFINE_STRUCT(TextStackFiles, (std::string, clip_l), (std::string, clip_g), (std::string, t5),
                           (std::string, tokenizers), (int, t5_length));
};

struct TrainConfig {
  BOOST_HANA_DEFINE_STRUCT(TrainConfig,
                           (backbone::MMDiTConfig, model),  // in_channels, adm_in, context_in: set from the encoders
                           (encoders::CaptionEncoderConfig, text),  // a caption-encoder conditioning slot
                           (TextStackFiles, text_stack),  // an SD3-text-stack conditioning slot
                           (std::string, autoencoder_weights),  // for a KL autoencoder slot; "" for pixels
                           (std::string, data),  // "": the shapes world; else a folder of captioned images
                                                 // (data/image_folder.hpp), cut to aspect-ratio buckets
                           (int, image_size),  // shapes: the images' side; a folder: the buckets' resolution
                           (double, max_aspect),  // a folder's widest bucket ratio
                           (int, examples), (std::uint64_t, data_seed),  // the shapes examples
                           (int, validation_examples),
                           (int, batch), (double, lr), (int, warmup_steps),
                           (std::string, lr_decay),  // constant | cosine | linear over the budget, after warmup
                           (double, weight_decay), (double, grad_clip),
                           (double, adam_beta1), (double, adam_beta2),  // AdamW's moment decays
                           (double, ema_decay),
                           (std::vector<double>, category_weights),  // training mix over the six shapes
                                                                     // categories; empty: equal shares
                           (double, drop_rate),  // per conditioning input (context, pooled), independently
                           (std::string, objective),  // e.g. "rf/lognorm(0.5, 0.6)": the pipeline's objective type
                                                      // with these numbers (objective_spec.hpp); "": its defaults
                           (double, timestep_shift),  // SD3 eq. 23 applied to the sampled training t (1: none)
                           (std::string, precision),  // "f32", "bf16" (mixed: bf16 products, f32 weights) or
                                                      // "auto" (from the CPU's features: precision_choice.hpp);
                                                      // a run's config.json records what auto chose
                           (int, workers),  // threads splitting each batch (one core each); 0: one per usable
                                            // core; a run's config.json records the number used
                           (int, steps), (double, minutes),  // budget: minutes > 0 wins
                           (std::uint64_t, seed), (int, log_every), (int, validate_every), (int, checkpoint_every),
                           (double, checkpoint_minutes), (std::vector<double>, snapshot_minutes),
                           (int, sample_steps), (double, sample_cfg), (double, sample_shift),
                           (std::vector<double>, sample_cfg_interval),  // {lo, hi}: guidance only for t in it
                           (std::vector<std::string>, sample_prompts));  // the sample sheet's; empty: the
                                                                        // shapes sheet, or a folder's first 12 captions  // {lo, hi}: guidance only for t in it

  // The shapes world's default model (docs/experiments/training_log.md says how these were chosen).
  static TrainConfig shapes_default() {
    TrainConfig c{};
    // MLP ratio 2, not the paper's 4: 1.2x the steps in 10 minutes (5561 against ~4300) and a strict
    // score of 0.31 at 10 minutes against 0.23 for ratio 4 at 4000 steps (means over three noise
    // seeds; docs/experiments/training_log.md, 2026-11-29)
    c.model = {.depth = 4, .hidden = 128, .heads = 2, .patch = 4, .in_channels = 3, .out_channels = 0, .adm_in = 64,
               .context_in = 64, .pos_embed_max_size = 8, .mlp_ratio = 2.0, .qk_norm = true, .x_self_attn_layers = {}};
    c.text = encoders::CaptionEncoderConfig::shapes_default();
    c.text_stack = {.clip_l = "", .clip_g = "", .t5 = "", .tokenizers = "", .t5_length = 77};  // the paper's 77 T5 tokens
    c.data = "";
    c.image_size = 32;
    c.max_aspect = 2.0;
    c.examples = 20000;
    c.data_seed = 0;
    c.validation_examples = 64;
    c.batch = 32;  // 0.160 vs 0.133-0.147 at 64 after 5 minutes (docs/experiments/training_log.md)
    c.lr = 2e-3;  // EMA val loss 0.074 vs 0.082 for 1e-3 after 5 minutes; 4e-3 no better (docs/experiments/training_log.md)
    c.warmup_steps = 100;
    c.lr_decay = "cosine";  // to zero over the budget: 0.733 against 0.703 at 60 minutes (docs/experiments/training_log.md)
    c.weight_decay = 0.0;
    c.grad_clip = 1.0;
    c.adam_beta1 = 0.9;
    c.adam_beta2 = 0.999;
    c.ema_decay = 0.999;
    c.category_weights = {};  // every cached example equally likely: the dataset's equal shares
    c.drop_rate = 0.316;  // sqrt(0.1): both inputs dropped for ~10% of examples, as SD3's 46.4%^3
    c.objective = "";  // rf/lognorm(0, 1), the SD3 paper's choice
    c.timestep_shift = 1.0;
    c.precision = "auto";  // bf16 where the CPU's bf16 products are faster (precision_choice.hpp)
    c.workers = 0;  // 2 on the 2-core CI machine: a step 1.55x faster than the batch on one thread (docs/experiments/training_log.md)
    c.steps = 2000;
    c.minutes = 0;
    c.seed = 0;
    c.log_every = 20;
    c.validate_every = 500;  // each costs ~2.7 s here (16 float32 forwards of 64): ~5% of a run at 250
    c.checkpoint_every = 0;
    c.checkpoint_minutes = 2.0;
    c.snapshot_minutes = {};
    c.sample_steps = 20;
    c.sample_cfg = 5.5;  // 4 -> 5.5: +0.02-0.03 on two seeds at 60 minutes; at 10 within noise (docs/experiments/training_log.md)
    c.sample_shift = 1.0;
    c.sample_cfg_interval = {0.0, 1.0};
    c.sample_prompts = {};
    return c;
  }
  void validate() const {
    auto bad = [](const std::string& m) { throw InputError("train config: " + m); };
    if (batch < 1) bad("batch must be at least 1");
    if (data.empty() && examples < batch) bad("examples must be at least batch");
    if (!(lr > 0) || warmup_steps < 0 || weight_decay < 0 || grad_clip < 0) bad("lr > 0, warmup_steps, weight_decay, grad_clip >= 0");
    if (!(adam_beta1 >= 0 && adam_beta1 < 1) || !(adam_beta2 >= 0 && adam_beta2 < 1)) bad("adam_beta1 and adam_beta2 must be in [0, 1)");
    if (!(ema_decay >= 0 && ema_decay < 1)) bad("ema_decay must be in [0, 1)");
    if (!data.empty() && !category_weights.empty()) bad("category_weights apply to the shapes world, not to an image folder (data)");
    if (!category_weights.empty()) {
      if (category_weights.size() != data::all_categories.size())
        bad("category_weights needs 6 weights (single_object, two_object, counting, colors, position, color_attr)");
      double total = 0;
      for (double w : category_weights) {
        if (!(w >= 0) || !std::isfinite(w)) bad("category_weights must be finite and >= 0");
        total += w;
      }
      if (!(total > 0)) bad("category_weights must not all be 0");
    }
    if (!(drop_rate >= 0 && drop_rate <= 1)) bad("drop_rate must be in [0, 1]");
    if (!(timestep_shift > 0)) bad("timestep_shift must be positive");
    if (steps < 0 || minutes < 0 || (steps == 0 && minutes == 0)) bad("give steps > 0 or minutes > 0");
    if (validation_examples < 1) bad("validation_examples must be at least 1");
    if (image_size < 16) bad("image_size must be at least 16");
    if (!(max_aspect >= 1)) bad("max_aspect must be at least 1");
    if (text_stack.t5_length < 0) bad("text_stack.t5_length must be >= 0 (0: as the reference)");
    if (log_every < 1) bad("log_every must be at least 1");
    if (workers < 0) bad("workers must be >= 0 (0: one per usable core)");
    if (precision != "f32" && precision != "bf16" && precision != "auto") bad("precision must be f32, bf16 or auto");
    check_lr_decay(lr_decay, "train config: lr_decay");
    if (sample_cfg_interval.size() != 2 || !sampling::valid_cfg_interval(sample_cfg_interval[0], sample_cfg_interval[1]))
      bad("sample_cfg_interval must be [lo, hi] with 0 <= lo <= hi <= 1");
  }
};

}  // namespace diffuse::training
