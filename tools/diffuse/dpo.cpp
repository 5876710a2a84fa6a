// `diffuse dpo --init MODEL --pairs FILE --out DIR ...`: Diffusion-DPO with LoRA on preference
// pairs (training/dpo_trainer.hpp). Writes the LoRA in the diffusers and kohya layouts; `diffuse
// sample / eval --checkpoint DIR` read the output folder as its base model plus this LoRA.
// `diffuse pairs --checkpoint MODEL --out DIR`: preference pairs for the shapes world from the
// model's own samples, judged by the exact evaluator.
#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fstream>
#include <map>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "base_model.hpp"
#include "command.hpp"
#include "progress.hpp"
#include "diffuse/data/shapes_dataset.hpp"
#include "diffuse/eval/shapes_eval.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/core/config.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/data/preference_pairs.hpp"
#include "diffuse/training/dpo_trainer.hpp"

namespace diffuse::cli {
namespace {

namespace fs = std::filesystem;

struct DpoOptions {
  std::string init, pairs, out, config, objective, dtype = "bf16", tokenizers;
  std::vector<std::string> targets;
  int rank = 0, resolution = 0, batch = 0, steps = 0, checkpoint_every = -1;
  double beta = 0, alpha = 0, lr = 0, shift = 0, minutes = 0;
  bool resume = false, seed_set = false;
  std::uint64_t seed = 0;
};

void run_dpo(const DpoOptions& o) {
  configure_threads();
  auto c = training::DpoTrainConfig::defaults();
  if (o.resume) {  // the run's saved config; a given option must not contradict it (only the budget may change)
    const auto saved = resumed_adapter_config<training::DpoTrainConfig>(
        o, "dpo_config.json", c, [&](const training::DpoTrainConfig& s, const OptionCheck& differs) {
          differs(o.beta > 0, o.beta == s.beta, "--beta");
          differs(o.checkpoint_every >= 0, o.checkpoint_every == s.checkpoint_every, "--checkpoint-every");
          differs(true, fs::path(o.pairs) == fs::path(s.pairs), "--pairs");
        });
    c.steps = saved.steps, c.minutes = saved.minutes;  // the run's budget unless given
  } else {
    if (!o.config.empty()) c = load_config<training::DpoTrainConfig>(o.config, c);
    apply_adapter_options(o, c);
    if (o.beta > 0) c.beta = o.beta;
  }
  apply_budget(o, c);
  c.base_model = o.init;
  c.pairs = o.pairs;
  c.validate();
  const auto pairs = data::read_preference_pairs(o.pairs);
  with_base_model(o.init, o.tokenizers, o.dtype, [&]<class Objective>(auto& base) {
    training::TrainCallbacks cb;
    cb.log = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
    training::DpoTrainer<Objective, std::remove_reference_t<decltype(base)>> trainer(base, pairs, o.out, c, o.resume, cb);
    const auto r = trainer.run();
    std::printf("DPO trained %d steps in %.1f min on %lld pairs; last loss %.4f, implicit accuracy %.2f -> %s/lora.safetensors\n",
                r.steps, r.seconds / 60, static_cast<long long>(trainer.pairs()), r.final_loss, r.final_accuracy, o.out.c_str());
  });
}

struct PairsOptions {
  std::string checkpoint, out;
  int prompts = 500, samples = 4, steps = 20, batch = 128;
  std::uint64_t seed = 1;
};

// K samples for each of N prompts drawn from the training distribution (none of them in the
// evaluation set), each judged by the strict evaluator; a prompt with both correct and wrong
// samples gives min(#correct, #wrong) pairs (the i-th correct chosen over the i-th wrong).
void run_pairs(const PairsOptions& o) {
  configure_threads();
  if (o.prompts < 1 || o.samples < 2 || o.steps < 1 || o.batch < 1)
    throw InputError("--prompts >= 1, --samples >= 2, --steps >= 1 and --batch >= 1");
  const fs::path out = o.out;
  if (fs::exists(out / "pairs.jsonl")) throw InputError(o.out + ": already holds pairs.jsonl; choose another --out");
  with_recipe(recipe_of(o.checkpoint), [&]<class P>() {
    pipeline::TrainedModel<P> m(o.checkpoint);
    std::set<std::string> evaluation;
    for (const auto& p : data::make_eval_prompts()) evaluation.insert(p.prompt);
    const data::ShapesWorld world(m.config().image_size, m.config().data_seed);
    std::mt19937_64 rng(data::mix_seed(o.seed, 0x7061697273ull));
    // The categories in turn; a prompt of the evaluation set is drawn again. A category whose
    // training prompts all lie in the evaluation set (single objects: few combinations) gives none.
    std::vector<data::EvalPrompt> prompts;
    std::vector<data::Category> open(data::all_categories.begin(), data::all_categories.end());
    while (prompts.size() < static_cast<std::size_t>(o.prompts)) {
      if (open.empty()) throw InputError("every training prompt of the shapes world is in the evaluation set");
      const auto cat = open[prompts.size() % open.size()];
      bool found = false;
      for (int tries = 0; tries < 4000 && !found; ++tries) {
        auto text = data::caption(world.sample_prompt(cat, data::Split::Train, rng));
        if (!evaluation.count(text)) prompts.push_back({std::move(text), cat, false}), found = true;
      }
      if (!found) {
        std::fprintf(stderr, "pairs: no %s prompt outside the evaluation set in 4000 draws; that category is left out\n",
                     std::string(data::name(cat)).c_str());
        open.erase(std::find(open.begin(), open.end(), cat));
      }
    }
    fs::create_directories(out / "images");
    std::ofstream pairs(out / "pairs.jsonl.partial"), judged(out / "prompts.jsonl");
    eval::ShapesEvalOptions strict;
    strict.strict = true;
    std::map<std::string, std::array<int, 4>> stats;  // category: prompts, samples correct, prompts with both, pairs
    int total_pairs = 0;
    const int per_batch = std::max(1, o.batch / o.samples);
    Progress progress("pairs", o.prompts);
    for (int lo = 0; lo < o.prompts; lo += per_batch) {
      const int n = std::min(per_batch, o.prompts - lo);
      std::vector<std::string> texts;
      for (int i = lo; i < lo + n; ++i)
        for (int k = 0; k < o.samples; ++k) texts.push_back(prompts[static_cast<std::size_t>(i)].prompt);
      pipeline::GenerateOptions g;
      g.steps = o.steps, g.cfg = m.config().sample_cfg, g.height = g.width = 0;
      g.cfg_interval = {m.config().sample_cfg_interval[0], m.config().sample_cfg_interval[1]};
      g.seed = o.seed * 1000003ull + static_cast<std::uint64_t>(lo) * static_cast<std::uint64_t>(o.samples);
      const auto imgs = m.generate(texts, g);
      for (int i = 0; i < n; ++i) {
        const auto& p = prompts[static_cast<std::size_t>(lo + i)];
        std::vector<io::RGBImage> good, bad;
        for (int k = 0; k < o.samples; ++k) {
          auto img = pipeline::to_rgb(imgs[i * o.samples + k]);
          (eval::evaluate_image(img, p, strict) ? good : bad).push_back(std::move(img));
        }
        judged << nlohmann::json{{"prompt", p.prompt}, {"category", data::name(p.category)}, {"correct", good.size()},
                                 {"samples", o.samples}}.dump()
               << "\n";
        auto& st = stats[std::string(data::name(p.category))];
        st[0] += 1, st[1] += static_cast<int>(good.size()), st[2] += !good.empty() && !bad.empty();
        for (std::size_t k = 0; k < std::min(good.size(), bad.size()); ++k) {
          char name[64];
          std::snprintf(name, sizeof name, "%05d_%zu", lo + i, k);
          const auto chosen = std::string("images/") + name + "_chosen.png", rejected = std::string("images/") + name + "_rejected.png";
          io::write_png(out / chosen, good[k]);
          io::write_png(out / rejected, bad[k]);
          pairs << nlohmann::json{{"prompt", p.prompt}, {"chosen", chosen}, {"rejected", rejected}}.dump() << "\n";
          ++st[3], ++total_pairs;
        }
      }
      progress.update(lo + n);
    }
    pairs.close();
    fs::rename(out / "pairs.jsonl.partial", out / "pairs.jsonl");
    nlohmann::json summary;
    std::printf("%-14s %8s %9s %10s %7s\n", "category", "prompts", "correct", "disagree", "pairs");
    for (const auto& [cat, st] : stats) {
      std::printf("%-14s %8d %8.1f%% %10d %7d\n", cat.c_str(), st[0], 100.0 * st[1] / (st[0] * o.samples), st[2], st[3]);
      summary[cat] = {{"prompts", st[0]}, {"correct_share", static_cast<double>(st[1]) / (st[0] * o.samples)},
                      {"prompts_with_both", st[2]}, {"pairs", st[3]}};
    }
    summary["checkpoint"] = o.checkpoint, summary["samples"] = o.samples, summary["seed"] = o.seed, summary["pairs"] = total_pairs;
    training::trainer_detail::write_text(out / "pairs_stats.json", summary.dump(2) + "\n");
    std::printf("%d pairs from %d prompts x %d samples -> %s/pairs.jsonl\n", total_pairs, o.prompts, o.samples, o.out.c_str());
    if (total_pairs == 0) throw Error("no prompt had both a correct and a wrong sample: no pairs (raise --samples or --prompts)");
  });
}

}  // namespace

void add_dpo(CLI::App& app) {
  auto p = std::make_shared<PairsOptions>();
  auto* pc = app.add_subcommand("pairs", "Make DPO preference pairs for the shapes world from a model's own samples");
  pc->add_option("--checkpoint", p->checkpoint, "model folder written by `diffuse train`")->required();
  pc->add_option("--out", p->out, "output folder (pairs.jsonl, images/, prompts.jsonl, pairs_stats.json)")->required();
  pc->add_option("--prompts", p->prompts, "prompts drawn from the training distribution, none in the evaluation set")
      ->capture_default_str();
  pc->add_option("--samples", p->samples, "samples per prompt")->capture_default_str();
  pc->add_option("--steps", p->steps, "sampling steps")->capture_default_str();
  pc->add_option("--batch", p->batch, "images per generation batch")->capture_default_str();
  pc->add_option("--seed", p->seed, "seed of the prompts and the noise")->capture_default_str();
  pc->callback([p] { run_pairs(*p); });

  auto o = std::make_shared<DpoOptions>();
  auto* cmd = app.add_subcommand("dpo", "Preference-tune a model with Diffusion-DPO and LoRA on pairs of chosen and rejected images");
  cmd->add_option("--init", o->init, "the base model: a `diffuse train` folder or an SD3 checkpoint `diffuse generate` reads")
      ->required();
  cmd->add_option("--pairs", o->pairs, "JSON lines {\"prompt\", \"chosen\", \"rejected\"}, image paths relative to the file")
      ->required();
  cmd->add_option("--out", o->out, "output folder (lora.safetensors, lora_kohya.safetensors, metrics.jsonl, loss.png)")->required();
  cmd->add_option("--config", o->config, "DpoTrainConfig JSON; keys it lacks keep the defaults (docs/dpo.md)");
  cmd->add_option("--beta", o->beta, "DPO beta, L = -log sigmoid(-(beta/2) ((err_w - ref_w) - (err_l - ref_l))) (default 5000)");
  cmd->add_option("--lora-rank", o->rank, "LoRA rank (default 128, the SD3 paper's)");
  cmd->add_option("--lora-alpha", o->alpha, "LoRA alpha; scale = alpha / rank (default: the rank)");
  cmd->add_option("--lora-targets", o->targets, "attention (default), all-linear, or module-name suffixes")->delimiter(',');
  cmd->add_option("--steps", o->steps, "train this many steps (default 500)");
  cmd->add_option("--minutes", o->minutes, "train for this many minutes of wall time (overrides --steps)");
  cmd->add_option("--lr", o->lr, "learning rate (default 1e-4)");
  cmd->add_option("--batch", o->batch, "pairs per step (default 8)");
  cmd->add_option("--resolution", o->resolution, "images cut to this square (default: the base's)");
  cmd->add_option("--objective", o->objective, "the objective's numbers, e.g. \"rf/lognorm(0, 1)\" (the default)");
  cmd->add_option("--shift", o->shift, "timestep shift of the training t (default: the base's)");
  cmd->add_option("--seed", o->seed, "seed")->each([o](const std::string&) { o->seed_set = true; });
  cmd->add_option("--checkpoint-every", o->checkpoint_every, "write the LoRA files every N steps (0: at the end; default 100)");
  cmd->add_option("--dtype", o->dtype, "base weights of an SD3 checkpoint: bf16 or f32")->capture_default_str();
  cmd->add_option("--tokenizers", o->tokenizers, "tokenizer folder for an SD3 checkpoint (as for generate)");
  cmd->add_flag("--resume", o->resume, "continue the run in --out from its last state, with its saved config");
  cmd->callback([o] {
    require_one_process("dpo");
    run_dpo(*o);
  });
}

}  // namespace diffuse::cli
