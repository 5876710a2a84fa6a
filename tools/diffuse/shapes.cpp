// `diffuse shapes render|dataset|eval|prompts`: the built-in shapes world and its GenEval-style evaluator.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "command.hpp"
#include "progress.hpp"
#include "diffuse/data/dataset.hpp"
#include "diffuse/eval/plot.hpp"
#include "diffuse/eval/shapes_eval.hpp"
#include "diffuse/io/atomic_file.hpp"

namespace diffuse::cli {
namespace {

namespace fs = std::filesystem;

struct ShapesOptions {
  std::string prompt, out, images, prompts, json, split = "train", category;
  std::uint64_t seed = 0;
  int size = 32, count = 100;
  bool lenient = false;
};

std::string index_name(std::size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%05zu.png", i);
  return buf;
}

void write_text(const fs::path& path, const std::string& text) {
  io::AtomicFileWriter w(path);
  w.write(text.data(), text.size());
  w.commit();
}

void run_render(const ShapesOptions& o) {
  const data::ShapesWorld world(o.size, o.seed);
  std::mt19937_64 rng(data::mix_seed(o.seed, 0));
  const auto prompt = data::parse_caption(o.prompt);
  io::write_png(o.out, data::render(world.layout(prompt, rng)), {{"parameters", o.prompt + "\nSeed: " + std::to_string(o.seed)}});
  std::cerr << "wrote " << o.out << "\n";
}

void run_dataset(const ShapesOptions& o) {
  if (o.count < 1) throw InputError("--count must be at least 1");
  if (o.split != "train" && o.split != "heldout") throw InputError("--split must be train or heldout");
  std::optional<data::Category> only;
  if (!o.category.empty()) only = data::category_from_name(o.category);
  const auto split = o.split == "train" ? data::Split::Train : data::Split::HeldOut;
  const data::ShapesImages examples(o.size, o.seed, static_cast<std::size_t>(o.count), only, split);
  const data::ShapesWorld world(o.size, o.seed);
  fs::create_directories(o.out);
  std::string lines, metadata;
  Progress progress("render", o.count);
  for (int i = 0; i < o.count; ++i) {
    const auto e = world.example(examples.index(static_cast<std::size_t>(i)), split);
    const auto file = index_name(static_cast<std::size_t>(i));
    io::write_png(fs::path(o.out) / file, e.image);
    lines += nlohmann::json{{"file", file}, {"caption", e.caption}, {"category", data::name(e.category)}, {"held_out", e.held_out}}.dump() + "\n";
    metadata += nlohmann::json{{"file_name", file}, {"text", e.caption}}.dump() + "\n";
    if ((i + 1) % 50 == 0 || i + 1 == o.count) progress.update(i + 1);
  }
  write_text(fs::path(o.out) / "captions.jsonl", lines);
  write_text(fs::path(o.out) / "metadata.jsonl", metadata);  // Hugging Face imagefolder form: `diffuse train --data`
  std::cerr << "wrote " << o.count << " images, captions.jsonl and metadata.jsonl to " << o.out << "\n";
}

void run_eval(const ShapesOptions& o) {
  const fs::path dir(o.images);
  if (!fs::is_directory(dir)) throw InputError(o.images + ": not a directory");
  std::vector<std::pair<std::string, data::EvalPrompt>> items;  // file, prompt
  if (!o.prompts.empty()) {
    std::ifstream in(o.prompts);
    if (!in) throw InputError(o.prompts + ": cannot open");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw InputError(o.prompts + ": not valid JSON: " + e.what());
    }
    const auto prompts = data::eval_prompts_from_json(j, o.prompts);
    for (std::size_t i = 0; i < prompts.size(); ++i) items.emplace_back(index_name(i), prompts[i]);
  } else {
    std::ifstream in(dir / "captions.jsonl");
    if (!in) throw InputError((dir / "captions.jsonl").string() + ": missing (or pass --prompts FILE with images 00000.png, ...)");
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (line.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
        items.emplace_back(j.at("file").get<std::string>(),
                           data::EvalPrompt{j.at("caption").get<std::string>(),
                                            data::category_from_name(j.at("category").get<std::string>()), j.value("held_out", false)});
      } catch (const nlohmann::json::exception& e) {
        throw InputError((dir / "captions.jsonl").string() + ":" + std::to_string(n) + ": " + e.what());
      }
    }
  }
  eval::ShapesEvalOptions opt;
  opt.strict = !o.lenient;
  eval::ShapesScore score;
  for (const auto& [file, p] : items) {
    const auto path = dir / file;
    if (!fs::exists(path)) throw InputError(path.string() + ": missing image for prompt '" + p.prompt + "'");
    score.add(p.category, p.held_out, eval::evaluate_image(io::read_png(path), p, opt));
  }
  std::cout << (opt.strict ? "strict" : "lenient") << " mode, " << items.size() << " images\n" << score.table();
  const std::string json_path = o.json.empty() ? (dir / "shapes_eval.json").string() : o.json;
  auto j = score.to_json();
  j["mode"] = opt.strict ? "strict" : "lenient";
  write_text(json_path, j.dump(2) + "\n");
  std::cerr << "wrote " << json_path << "\n";
}

// A grid of examples, each upscaled 4x with its caption underneath (for docs/).
void run_grid(const ShapesOptions& o) {
  if (o.count < 1 || o.count > 64) throw InputError("--count must be in 1..64");
  const data::ShapesWorld world(o.size, o.seed);
  const int scale = std::max(1, 128 / o.size), cell_w = o.size * scale + 120, cell_h = o.size * scale + 34, cols = 4;
  const int rows = (o.count + cols - 1) / cols;
  eval::Canvas canvas(cols * cell_w, rows * cell_h);
  for (int i = 0; i < o.count; ++i) {
    const auto e = world.example(static_cast<std::uint64_t>(i), i % 6 == 5 ? data::Split::HeldOut : data::Split::Train);
    const int x0 = (i % cols) * cell_w + 60, y0 = (i / cols) * cell_h + 4;
    for (int y = 0; y < o.size * scale; ++y)
      for (int x = 0; x < o.size * scale; ++x) {
        const int sy = y / scale, sx = x / scale;
        canvas.fill(x0 + x, y0 + y, x0 + x + 1, y0 + y + 1, {e.image(sy, sx, 0), e.image(sy, sx, 1), e.image(sy, sx, 2)});
      }
    const std::string text = e.caption + (e.held_out ? " (held out)" : "");
    canvas.text(x0 + o.size * scale / 2.0 - eval::Canvas::text_width(text) / 2.0, y0 + o.size * scale + 6, text, {40, 40, 40});
  }
  io::write_png(o.out, canvas.image(), {{"Software", "diffuse shapes grid"}});
  std::cerr << "wrote " << o.out << "\n";
}

}  // namespace

void add_shapes(CLI::App& app) {
  auto* cmd = app.add_subcommand("shapes", "The built-in shapes world: render, make a dataset, evaluate images");
  cmd->require_subcommand(1);
  auto o = std::make_shared<ShapesOptions>();
  auto* render = cmd->add_subcommand("render", "render the scene a caption describes");
  render->add_option("--prompt", o->prompt, "e.g. \"a red circle above a blue square\"")->required();
  render->add_option("--seed", o->seed, "layout seed")->capture_default_str();
  render->add_option("--size", o->size, "image size in pixels")->capture_default_str();
  render->add_option("--out", o->out, "PNG to write")->required();
  render->callback([o] { run_render(*o); });

  auto* dataset = cmd->add_subcommand("dataset", "write N examples as PNG files plus captions.jsonl and metadata.jsonl");
  dataset->add_option("--count", o->count, "number of examples")->capture_default_str();
  dataset->add_option("--out", o->out, "output directory")->required();
  dataset->add_option("--seed", o->seed, "dataset seed")->capture_default_str();
  dataset->add_option("--size", o->size, "image size in pixels")->capture_default_str();
  dataset->add_option("--split", o->split, "train or heldout")->capture_default_str();
  dataset->add_option("--category", o->category,
                      "only this category: single_object, two_object, counting, colors, position or color_attr");
  dataset->callback([o] { run_dataset(*o); });

  auto* ev = cmd->add_subcommand("eval", "score images against their prompts (GenEval-style table and JSON)");
  ev->add_option("--images", o->images, "directory with captions.jsonl, or images 00000.png... for --prompts")->required();
  ev->add_option("--prompts", o->prompts, "prompt set JSON (e.g. data/shapes_eval_prompts.json)");
  ev->add_option("--json", o->json, "where to write the scores (default: IMAGES/shapes_eval.json)");
  ev->add_flag("--lenient", o->lenient, "check colours only in the colour categories");
  ev->callback([o] { run_eval(*o); });

  auto* grid = cmd->add_subcommand("grid", "draw example images with their captions into one PNG");
  grid->add_option("--count", o->count, "number of examples (1-64)")->capture_default_str();
  grid->add_option("--size", o->size, "image size in pixels")->capture_default_str();
  grid->add_option("--seed", o->seed, "dataset seed")->capture_default_str();
  grid->add_option("--out", o->out, "PNG to write")->required();
  grid->callback([o] { run_grid(*o); });

  auto* prompts = cmd->add_subcommand("prompts", "write the fixed evaluation prompt set");
  prompts->add_option("--out", o->out, "JSON file to write")->required();
  prompts->callback([o] { write_text(o->out, data::eval_prompts_to_json(data::make_eval_prompts()).dump(1) + "\n"); });
}

}  // namespace diffuse::cli
