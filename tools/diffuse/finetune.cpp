// `diffuse train --init MODEL --data DIR --lora-rank R ...`: LoRA fine-tuning of a trained model
// (a `diffuse train` folder, or any SD3 / SD3.5 checkpoint `diffuse generate` reads) on an image
// folder (training/lora_trainer.hpp). Writes the LoRA in the diffusers and kohya layouts.
#include <cstdio>
#include <filesystem>
#include <string>

#include "base_model.hpp"
#include "finetune.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/data/image_folder.hpp"
#include "diffuse/training/lora_trainer.hpp"

namespace diffuse::cli {
namespace {

namespace fs = std::filesystem;

template <class Objective, class Base>
void train_lora(Base& base, const LoraOptions& o, const training::LoraTrainConfig& c) {
  const data::ImageFolder folder(o.data);
  training::TrainCallbacks cb;
  cb.log = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  training::LoraTrainer<Objective, Base> trainer(base, folder, o.out, c, o.resume, cb);
  const auto r = trainer.run();
  std::printf("LoRA trained %d steps in %.1f min on %zu images (%zu skipped); fit loss %.4f -> %.4f -> %s/lora.safetensors\n",
              r.steps, r.seconds / 60, r.examples, r.skipped, r.fit_loss_before, r.fit_loss_after, o.out.c_str());
}

}  // namespace

void run_lora_train(const LoraOptions& o) {
  configure_threads();
  if (o.data.empty()) throw InputError("--init needs --data DIR (a folder of images with .txt captions or a metadata.jsonl)");
  if (o.out.empty()) throw InputError("--init needs --out DIR for the LoRA files");
  auto c = training::LoraTrainConfig::defaults();
  if (!o.config.empty()) c = load_config<training::LoraTrainConfig>(o.config, c);
  apply_adapter_options(o, c);
  if (o.recompute_every >= 0) c.recompute_every = o.recompute_every;
  apply_budget(o, c);
  c.validate();
  c.base_model = o.init;
  if (o.resume)  // the run continues with its saved config; a given option must not contradict it
    resumed_adapter_config<training::LoraTrainConfig>(o, "lora_config.json", training::LoraTrainConfig::defaults());
  with_base_model(o.init, o.tokenizers, o.dtype, [&]<class Objective>(auto& base) { train_lora<Objective>(base, o, c); });
}

void add_lora_train_options(CLI::App& cmd, std::shared_ptr<LoraOptions> l) {
  cmd.add_option("--init", l->init,
                 "LoRA fine-tuning: the base model, a `diffuse train` folder or an SD3 checkpoint `diffuse generate` reads");
  cmd.add_option("--data", l->data, "a folder of images (png, jpg, webp, bmp) with .txt captions or a metadata.jsonl: fine-tuned on with --init, "
                  "else a new model is trained on it");
  cmd.add_option("--lora-rank", l->rank, "with --init: LoRA rank (default 16)");
  cmd.add_option("--lora-alpha", l->alpha, "with --init: LoRA alpha; scale = alpha / rank (default: the rank)");
  cmd.add_option("--lora-targets", l->targets, "with --init: attention (default), all-linear, or module-name suffixes")
      ->delimiter(',');
  cmd.add_option("--resolution", l->resolution, "bucket resolution in pixels (default: the base's with --init, else the config's image_size)");
  cmd.add_option("--batch", l->batch, "images per step (default 1 with --init, else the config's)");
  cmd.add_option("--lr", l->lr, "learning rate (default 1e-4 with --init, else the config's)");
  cmd.add_option("--objective", l->objective, "the objective's numbers, e.g. \"rf/lognorm(0, 1)\" (the default)");
  cmd.add_option("--shift", l->shift, "timestep shift of the training t (default: the base's with --init, else the config's)");
  cmd.add_option("--checkpoint-every", l->checkpoint_every, "with --init: write the LoRA files every N steps (0: at the end)");
  cmd.add_option("--recompute-every", l->recompute_every,
                 "with --init: every N-th MM-DiT block keeps only its inputs and is run again in the backward (less "
                 "memory, more time; 0: none, the default)");
  cmd.add_option("--dtype", l->dtype, "with --init and an SD3 checkpoint: base weights in bf16 or f32")->capture_default_str();
  cmd.add_option("--tokenizers", l->tokenizers, "tokenizer folder for SD3's text stack (--init with an SD3 checkpoint, or --encoders; as for generate)");
}

}  // namespace diffuse::cli
