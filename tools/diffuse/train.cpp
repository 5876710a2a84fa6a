// `diffuse train | sample | eval`: the main job. Train a text-to-image model on the shapes world
// from a pipeline typedef, sample it to PNG with the generation parameters in a text chunk, and
// score it with the GenEval-style evaluator. The recipe is chosen by name among the library's
// typedefs (pipeline/pipeline.hpp); each is compiled in, none is dispatched inside the library.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "command.hpp"
#include "finetune.hpp"
#include "inputs.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/eval/shapes_eval.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/pipeline/sd3_generator.hpp"
#include "diffuse/pipeline/trained_model.hpp"
#include "diffuse/training/trainer.hpp"
#include "progress.hpp"

namespace diffuse::cli {
namespace {

namespace fs = std::filesystem;

struct TrainOptions {
  std::string config, out = "out/shapes", recipe = "sd3-pixels", autoencoder, encoders;
  LoraOptions shared;  // the options training from scratch shares with fine-tuning (--data, --lr, ...)
  int steps = 0;
  double minutes = 0;
  bool resume = false, seed_set = false;
  std::uint64_t seed = 0;
  double dist_timeout = 300;  // seconds a rank waits for the others (ProcessGroupOptions::timeout)
};

void run_train(const TrainOptions& o) {
  configure_threads();
  training::TrainConfig c;
  if (o.resume) {
    // The run's own config.json (its precision, workers and budget as decided at its start); only
    // the budget may be changed.
    const auto& d = o.shared;
    if (!o.config.empty() || o.seed_set || !o.autoencoder.empty() || !o.encoders.empty() || !d.data.empty() ||
        !d.objective.empty() || !d.tokenizers.empty() || d.resolution > 0 || d.batch > 0 || d.lr > 0 || d.shift > 0)
      throw InputError("--resume continues the run in " + o.out + " with its saved config.json; only --steps / --minutes "
                       "can change it");
    const auto saved = fs::path(o.out) / "config.json";
    if (!fs::is_regular_file(saved)) throw InputError(saved.string() + ": missing (is this a `diffuse train --out` folder?)");
    c = load_config<training::TrainConfig>(saved, training::TrainConfig::shapes_default());
  } else {
    c = o.config.empty() ? training::TrainConfig::shapes_default()
                         : load_config<training::TrainConfig>(o.config, training::TrainConfig::shapes_default());
    if (o.seed_set) c.seed = o.seed;
    const auto& d = o.shared;
    if (!d.data.empty()) c.data = d.data;
    if (d.resolution > 0) c.image_size = d.resolution;
    if (d.batch > 0) c.batch = d.batch;
    if (d.lr > 0) c.lr = d.lr;
    if (!d.objective.empty()) c.objective = d.objective;
    if (d.shift > 0) c.timestep_shift = d.shift;
    if (!o.encoders.empty()) {  // a released SD3 model's frozen text encoders and VAE
      const auto f = pipeline::find_sd3_model(o.encoders);
      c.text_stack.clip_l = f.clip_l, c.text_stack.clip_g = f.clip_g, c.text_stack.t5 = f.t5;
      c.text_stack.tokenizers = f.tokenizers;
      c.autoencoder_weights = f.vae;
    }
    if (!d.tokenizers.empty()) c.text_stack.tokenizers = d.tokenizers;
    if (!o.autoencoder.empty()) c.autoencoder_weights = o.autoencoder;
  }
  if (o.steps > 0) c.steps = o.steps, c.minutes = 0;
  if (o.minutes > 0) c.minutes = o.minutes;
  const std::string recipe = o.resume ? recipe_of(o.out) : o.recipe;
  if (!o.resume && recipe == "sd3-text-stack" && c.text_stack.t5.empty() && c.text_stack.clip_l.empty() && c.text_stack.clip_g.empty())
    throw InputError("--recipe sd3-text-stack trains on SD3's released text encoders and VAE: give --encoders MODEL");
  // Several processes (RANK / WORLD_SIZE from `diffuse launch`, torchrun or srun): join them first,
  // so that a store that cannot be reached is reported before any work.
  const auto env = training::distributed_env();
  std::shared_ptr<training::ProcessGroup> group;
  if (env.world_size > 1) {
    if (!(o.dist_timeout > 0)) throw InputError("--dist-timeout must be positive");
    training::ProcessGroupOptions po;
    po.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(o.dist_timeout * 1000));
    group = std::make_shared<training::ProcessGroup>(env, po);
  }
  with_recipe(recipe, [&]<class P>() {
    training::TrainCallbacks cb;
    cb.log = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
    training::Trainer<P> trainer(o.out, c, o.resume, cb, group);
    const auto r = trainer.run();
    if (group && !group->lead()) return;  // rank 0 reports the run
    std::printf("trained %d steps in %.1f min; last loss %.4f, validation loss %.4f (EMA %.4f) -> %s\n", r.steps, r.seconds / 60,
                r.final_loss, r.val_loss, r.val_loss_ema, o.out.c_str());
  });
}

struct SampleOptions {
  std::string checkpoint, out = "sample.png", weights, negative;
  std::vector<std::string> prompts, loras;
  int steps = 20, columns = 0, scale = 4;
  std::optional<double> cfg;  // default: the model's sample_cfg
  std::vector<double> cfg_interval;  // default: the model's sample_cfg_interval
  double shift = 0;
  std::uint64_t seed = 0;
};

// --lora FILE[:STRENGTH] arguments merged into a trained model, in order.
template <class M>
void add_loras(M& m, const std::vector<std::string>& args) {
  for (const auto& arg : args) {
    const auto l = parse_lora_arg(arg);
    m.add_lora(l.path, l.strength);
    std::fprintf(stderr, "LoRA %s at strength %g\n", l.path.c_str(), l.strength);
  }
}

// A LoRA or DPO output folder (lora_config.json / dpo_config.json beside lora.safetensors) stands
// for its base model, a `diffuse train` folder, with that LoRA at strength 1 before any --lora.
struct CheckpointAndLoras {
  std::string checkpoint;
  std::vector<std::string> loras;
};
CheckpointAndLoras resolve_checkpoint(const std::string& dir, const std::vector<std::string>& loras) {
  for (const char* name : {"dpo_config.json", "lora_config.json"}) {
    const auto file = fs::path(dir) / name;
    if (!fs::is_regular_file(file)) continue;
    std::ifstream in(file);
    const auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.contains("base_model") || !j["base_model"].is_string())
      throw InputError(file.string() + ": no base_model (is this a `diffuse dpo` / `train --init` folder?)");
    const auto base = j["base_model"].get<std::string>();
    if (!fs::is_regular_file(fs::path(base) / "recipe.txt"))
      throw InputError(dir + ": its base model " + base + " is not a `diffuse train` folder; use `diffuse generate --model " + base +
                       " --lora " + (fs::path(dir) / "lora.safetensors").string() + "`");
    CheckpointAndLoras r{base, {(fs::path(dir) / "lora.safetensors").string()}};
    r.loras.insert(r.loras.end(), loras.begin(), loras.end());
    std::fprintf(stderr, "%s: base model %s with its LoRA\n", dir.c_str(), base.c_str());
    return r;
  }
  return {dir, loras};
}

// --cfg-interval LO,HI, else the model's default.
std::array<double, 2> cfg_interval_of(const std::vector<double>& given, const training::TrainConfig& c) {
  const auto& v = given.empty() ? c.sample_cfg_interval : given;
  if (v.size() != 2 || !pipeline::valid_cfg_interval(v[0], v[1]))
    throw InputError("--cfg-interval: give LO,HI with 0 <= LO <= HI <= 1");
  return {v[0], v[1]};
}
std::string fmt_interval(const std::array<double, 2>& v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "[%g, %g]", v[0], v[1]);
  return buf;
}

void run_sample(const SampleOptions& o) {
  configure_threads();
  if (o.prompts.empty()) throw InputError("give at least one --prompt");
  if (o.steps < 1) throw InputError("--steps must be at least 1");
  if (o.scale < 1 || o.scale > 32) throw InputError("--scale must be in 1..32");
  const auto ck = resolve_checkpoint(o.checkpoint, o.loras);
  with_recipe(recipe_of(ck.checkpoint), [&]<class P>() {
    pipeline::TrainedModel<P> m(ck.checkpoint, o.weights);
    add_loras(m, ck.loras);
    const double cfg = o.cfg.value_or(m.config().sample_cfg);
    pipeline::GenerateOptions g;
    g.steps = o.steps, g.cfg = cfg, g.seed = o.seed, g.height = g.width = 0;
    g.cfg_interval = cfg_interval_of(o.cfg_interval, m.config());
    const auto imgs = m.generate(o.prompts, g, o.shift);
    const double shift = o.shift > 0 ? o.shift : m.config().sample_shift;
    const std::map<std::string, std::string> text{{"prompt", o.prompts.size() == 1 ? o.prompts[0] : nlohmann::json(o.prompts).dump()},
                                                  {"seed", std::to_string(o.seed)},   {"steps", std::to_string(o.steps)},
                                                  {"cfg", std::to_string(cfg)},       {"sampler", typename P::sampler_type{}.name()},
                                                  {"shift", std::to_string(shift)},   {"model_hash", m.model_hash()},
                                                  {"cfg_interval", fmt_interval(g.cfg_interval)},
                                                  {"Software", "diffuse sample"}};
    const int cols = o.columns > 0 ? o.columns : static_cast<int>(std::min<std::size_t>(o.prompts.size(), 8));
    io::write_png(o.out, pipeline::image_grid(imgs, cols, o.scale), text);
    std::fprintf(stderr, "wrote %s (%zu image%s, model %s, step %d)\n", o.out.c_str(), o.prompts.size(),
                 o.prompts.size() == 1 ? "" : "s", m.model_hash().c_str(), m.step());
  });
}

struct EvalOptions {
  std::string checkpoint, prompts, out, weights;
  std::vector<std::string> loras;
  int steps = 20, batch = 100;
  std::optional<double> cfg;  // default: the model's sample_cfg
  std::vector<double> cfg_interval;  // default: the model's sample_cfg_interval
  double shift = 0;
  std::uint64_t seed = 0;
  bool lenient = false;
};

void run_eval(const EvalOptions& o) {
  configure_threads();
  std::vector<data::EvalPrompt> prompts;
  if (o.prompts.empty()) {
    prompts = data::make_eval_prompts();
  } else {
    std::ifstream in(o.prompts);
    if (!in) throw InputError(o.prompts + ": cannot open");
    const auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded()) throw InputError(o.prompts + ": not valid JSON");
    prompts = data::eval_prompts_from_json(j, o.prompts);
  }
  if (o.batch < 1) throw InputError("--batch must be at least 1");
  const auto ck = resolve_checkpoint(o.checkpoint, o.loras);
  with_recipe(recipe_of(ck.checkpoint), [&]<class P>() {
    pipeline::TrainedModel<P> m(ck.checkpoint, o.weights);
    add_loras(m, ck.loras);
    const double cfg = o.cfg.value_or(m.config().sample_cfg);
    const auto interval = cfg_interval_of(o.cfg_interval, m.config());
    eval::ShapesEvalOptions opt;
    opt.strict = !o.lenient;
    eval::ShapesScore score;
    Progress progress("eval", static_cast<int>(prompts.size()));
    std::vector<torch::Tensor> sheet;
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < prompts.size(); i += static_cast<std::size_t>(o.batch)) {
      const auto n = std::min(prompts.size() - i, static_cast<std::size_t>(o.batch));
      std::vector<std::string> texts;
      for (std::size_t k = 0; k < n; ++k) texts.push_back(prompts[i + k].prompt);
      pipeline::GenerateOptions g;
      g.steps = o.steps, g.cfg = cfg, g.seed = o.seed + i * 7919, g.height = g.width = 0;
      g.cfg_interval = interval;
      const auto imgs = m.generate(texts, g, o.shift);
      for (std::size_t k = 0; k < n; ++k) {
        const auto& p = prompts[i + k];
        score.add(p.category, p.held_out, eval::evaluate_image(pipeline::to_rgb(imgs[static_cast<std::int64_t>(k)]), p, opt));
      }
      if (sheet.size() < 48) sheet.push_back(imgs.narrow(0, 0, std::min<std::int64_t>(imgs.size(0), 48 - static_cast<std::int64_t>(sheet.size()))));
      progress.update(static_cast<int>(i + n));
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("GenEval-style score of %s (step %d, %s mode, %zu prompts, %d steps, cfg %.1f on t in %s, %.0f s)\n%s",
                m.weights().string().c_str(), m.step(), opt.strict ? "strict" : "lenient", prompts.size(), o.steps, cfg,
                fmt_interval(interval).c_str(), secs,
                score.table().c_str());
    if (!o.out.empty()) {
      fs::create_directories(o.out);
      auto j = score.to_json();
      j["weights"] = m.weights().string(), j["step"] = m.step(), j["steps"] = o.steps, j["cfg"] = cfg, j["seed"] = o.seed;
      j["cfg_interval"] = interval;
      j["strict"] = opt.strict, j["seconds"] = secs;
      training::trainer_detail::write_text(fs::path(o.out) / "eval.json", j.dump(2) + "\n");
      io::write_png(fs::path(o.out) / "eval_samples.png", pipeline::image_grid(torch::cat(sheet), 8, 3));  // <= 48 images
      std::fprintf(stderr, "wrote %s/eval.json and eval_samples.png\n", o.out.c_str());
    }
  });
}

}  // namespace

void add_train(CLI::App& app) {
  auto t = std::make_shared<TrainOptions>();
  auto* cmd = app.add_subcommand("train", "Train a text-to-image model on the shapes world (no arguments: the default model) or an "
                                          "image folder (--data), or fine-tune one with LoRA (--init)");
  cmd->add_option("--config", t->config,
                  "TrainConfig JSON; keys it lacks keep the shapes defaults (docs/training.md); with --init a LoraTrainConfig "
                  "(docs/finetune.md)");
  cmd->add_option("--out", t->out, "model folder (checkpoints, metrics.jsonl, loss.png, samples.png)")->capture_default_str();
  cmd->add_option("--steps", t->steps, "train this many steps (overrides the config)");
  cmd->add_option("--minutes", t->minutes, "train for this many minutes of wall time (overrides --steps)");
  cmd->add_flag("--resume", t->resume,
                "continue the run in --out from its last checkpoint, with its saved config and budget "
                "(unless --steps / --minutes)");
  cmd->add_option("--recipe", t->recipe,
                  "pipeline: sd3-pixels (default), sd3 (needs --autoencoder) or sd3-text-stack (needs --encoders)")
      ->capture_default_str();
  cmd->add_option("--autoencoder", t->autoencoder, "KL autoencoder weights for --recipe sd3 (`diffuse vae train`)");
  cmd->add_option("--encoders", t->encoders,
                  "a released SD3 model (all-in-one .safetensors or diffusers folder) whose text encoders and VAE a new "
                  "MM-DiT trains on, frozen (implies --recipe sd3-text-stack)");
  cmd->add_option("--seed", t->seed, "seed (overrides the config)")->each([t](const std::string&) { t->seed_set = true; });
  cmd->add_option("--dist-timeout", t->dist_timeout,
                  "in a run of several processes (diffuse launch, torchrun): seconds a rank waits for the others before it "
                  "stops with an error naming the rank")
      ->capture_default_str();
  auto l = std::make_shared<LoraOptions>();
  add_lora_train_options(*cmd, l);
  cmd->callback([t, l, cmd] {
    if (l->init.empty()) {
      if (l->any_lora_only_option())
        throw InputError("--lora-rank, --lora-alpha, --lora-targets, --dtype, --checkpoint-every and --recompute-every are LoRA fine-tuning "
                         "options: they need --init MODEL");
      if (!t->encoders.empty() && !cmd->count("--recipe")) t->recipe = "sd3-text-stack";
      t->shared = *l;
      run_train(*t);
      return;
    }
    require_one_process("train --init");
    if (cmd->count("--recipe") || !t->autoencoder.empty() || !t->encoders.empty())
      throw InputError("--init fine-tunes the model it names: --recipe, --autoencoder and --encoders do not apply");
    auto o = *l;
    o.out = cmd->count("--out") ? t->out : std::string();
    o.config = t->config, o.steps = t->steps, o.minutes = t->minutes, o.resume = t->resume;
    o.seed = t->seed, o.seed_set = t->seed_set;
    run_lora_train(o);
  });

  auto s = std::make_shared<SampleOptions>();
  auto* sc = app.add_subcommand("sample", "Generate images from a trained model to a PNG (parameters in its text chunks)");
  sc->add_option("--checkpoint", s->checkpoint,
                  "model folder written by `diffuse train`, or a `diffuse dpo` / `train --init` output folder (its base + LoRA)")
      ->required();
  sc->add_option("--prompt", s->prompts, "prompt (repeat for a grid)")->required();
  sc->add_option("--out", s->out, "output PNG")->capture_default_str();
  sc->add_option("--seed", s->seed, "seed of the initial noise")->capture_default_str();
  sc->add_option("--steps", s->steps, "sampling steps")->capture_default_str();
  sc->add_option("--cfg", s->cfg, "classifier-free guidance scale (1: none; default: the model's sample_cfg)");
  sc->add_option("--cfg-interval", s->cfg_interval, "LO,HI: guide only for t in [LO, HI] (default: the model's sample_cfg_interval)")
      ->expected(2)->delimiter(',');
  sc->add_option("--shift", s->shift, "schedule shift (default: the model's)");
  sc->add_option("--weights", s->weights, "backbone weights instead of the checkpoint's EMA (e.g. a snapshot)");
  sc->add_option("--lora", s->loras, lora_help);
  sc->add_option("--scale", s->scale, "nearest-neighbour upscaling of the PNG")->capture_default_str();
  sc->add_option("--columns", s->columns, "grid columns (default: up to 8)");
  sc->callback([s] { run_sample(*s); });

  auto e = std::make_shared<EvalOptions>();
  auto* ec = app.add_subcommand("eval", "Sample the shapes evaluation prompts and print the GenEval-style table");
  ec->add_option("--checkpoint", e->checkpoint,
                  "model folder written by `diffuse train`, or a `diffuse dpo` / `train --init` output folder (its base + LoRA)")
      ->required();
  ec->add_option("--prompts", e->prompts, "prompt set JSON (default: the built-in 300, data/shapes_eval_prompts.json)");
  ec->add_option("--out", e->out, "folder for eval.json and eval_samples.png");
  ec->add_option("--seed", e->seed, "seed of the initial noise")->capture_default_str();
  ec->add_option("--steps", e->steps, "sampling steps")->capture_default_str();
  ec->add_option("--cfg", e->cfg, "classifier-free guidance scale (default: the model's sample_cfg)");
  ec->add_option("--cfg-interval", e->cfg_interval, "LO,HI: guide only for t in [LO, HI] (default: the model's sample_cfg_interval)")
      ->expected(2)->delimiter(',');
  ec->add_option("--shift", e->shift, "schedule shift (default: the model's)");
  ec->add_option("--batch", e->batch, "prompts per sampling batch")->capture_default_str();
  ec->add_option("--weights", e->weights, "backbone weights instead of the checkpoint's EMA (e.g. a snapshot)");
  ec->add_option("--lora", e->loras, lora_help);
  ec->add_flag("--lenient", e->lenient, "do not check the colours of objects the prompt names without a colour");
  ec->callback([e] { run_eval(*e); });
}

}  // namespace diffuse::cli
