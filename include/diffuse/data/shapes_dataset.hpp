#pragma once
// The shapes dataset (torch-free): deterministic (image, caption, scene) examples, balanced over
// the six categories, with a fixed held-out split of combinations that never appear in training
// (for measuring compositional generalisation), and the fixed evaluation prompt set.
//
// Held out: the colour-shape pairs "purple triangle" and "orange square" anywhere, and the
// arrangement "triangle left of square" (any colours) in position captions.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/data/shapes_captions.hpp"
#include "diffuse/data/shapes_scene.hpp"

namespace diffuse::data {

enum class Split : std::uint8_t { Train, HeldOut };

inline bool is_held_out(const Prompt& p) {
  for (const auto& o : p.objects)
    if ((o.colour == Colour::Purple && o.shape == Shape::Triangle) || (o.colour == Colour::Orange && o.shape == Shape::Square))
      return true;
  if (p.relation && p.objects.size() == 2) {
    const auto a = p.objects[0].shape, b = p.objects[1].shape;
    const auto r = *p.relation;
    // "triangle left of square" and its mirror "square right of triangle" are the same arrangement
    if ((a == Shape::Triangle && b == Shape::Square && r == Relation::LeftOf) ||
        (a == Shape::Square && b == Shape::Triangle && r == Relation::RightOf))
      return true;
  }
  return false;
}

struct Example {
  io::RGBImage image;
  std::string caption;
  Prompt prompt;
  Category category;
  Scene scene;
  bool held_out = false;
};

// Independent streams per (seed, index): splitmix64 of both.
inline std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + index + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Example `index` of a world shows a prompt of this category: the six take turns, so any run of
// consecutive examples holds them in equal shares.
inline Category category_of_example(std::uint64_t index) { return all_categories[index % all_categories.size()]; }

class ShapesWorld {
 public:
  explicit ShapesWorld(int size = 32, std::uint64_t seed = 0) : size_(size), seed_(seed) {
    if (size < 16) throw InputError("shapes: image size must be at least 16");
  }
  int size() const { return size_; }

  // A prompt of a category, from the train split or the held-out split.
  Prompt sample_prompt(Category cat, Split split, std::mt19937_64& rng) const {
    for (int attempt = 0; attempt < 10000; ++attempt) {
      Prompt p = draw(cat, rng);
      if (is_held_out(p) == (split == Split::HeldOut)) return p;
    }
    throw Error("shapes: could not draw a prompt for this split");
  }

  // A scene showing exactly what the prompt names, objects apart and inside the image.
  Scene layout(const Prompt& p, std::mt19937_64& rng) const {
    std::vector<Object> objs;
    for (const auto& o : p.objects)
      for (int k = 0; k < o.count; ++k) objs.push_back({o.shape, o.colour, 0, 0, 0});
    if (objs.size() > 4) throw InputError("shapes: at most 4 objects per scene");
    std::uniform_real_distribution<double> u(0.0, 1.0);
    double scale = 1.0;
    for (int round = 0; round < 20; ++round, scale *= 0.8) {
      for (int attempt = 0; attempt < 200; ++attempt) {
        bool ok = true;
        for (std::size_t i = 0; i < objs.size() && ok; ++i) {
          auto& o = objs[i];
          // 0.12 of the image (3.8 px at 32 px) is the smallest size the evaluator classifies
          // reliably; crowded scenes narrow the range towards it instead of shrinking below it.
          o.size = size_ * (0.12 + 0.05 * u(rng) * scale);
          const double br = bounding_radius(o) + 0.5;
          ok = false;
          for (int t = 0; t < 100 && !ok; ++t) {  // place this object, keeping the earlier ones
            o.cx = br + u(rng) * (size_ - 2 * br);
            o.cy = br + u(rng) * (size_ - 2 * br);
            ok = true;
            for (std::size_t j = 0; j < i && ok; ++j)
              ok = std::hypot(o.cx - objs[j].cx, o.cy - objs[j].cy) >= bounding_radius(o) + bounding_radius(objs[j]) + 1.5;
          }
        }
        if (ok && p.relation) ok = relation_holds(*p.relation, objs[0], objs[1], 0.2 * size_);
        if (ok) return {size_, size_, objs};
      }
    }
    throw Error("shapes: could not place the objects of '" + caption(p) + "'");
  }

  Example example(std::uint64_t index, Split split = Split::Train) const {
    std::mt19937_64 rng(mix_seed(seed_ ^ (split == Split::HeldOut ? 0x5EEDull : 0ull), index));
    const Category cat = category_of_example(index);
    Example e;
    e.category = cat;
    e.prompt = sample_prompt(cat, split, rng);
    e.caption = caption(e.prompt);
    e.scene = layout(e.prompt, rng);
    e.image = render(e.scene);
    e.held_out = split == Split::HeldOut;
    return e;
  }

  static bool relation_holds(Relation r, const Object& a, const Object& b, double margin) {
    switch (r) {
      case Relation::Above: return a.cy < b.cy - margin;
      case Relation::Below: return a.cy > b.cy + margin;
      case Relation::LeftOf: return a.cx < b.cx - margin;
      case Relation::RightOf: return a.cx > b.cx + margin;
    }
    return false;
  }

 private:
  static Prompt draw(Category cat, std::mt19937_64& rng) {
    auto pick_shape = [&] { return all_shapes[rng() % all_shapes.size()]; };
    auto pick_colour = [&] { return all_colours[rng() % all_colours.size()]; };
    Prompt p;
    switch (cat) {
      case Category::SingleObject:
      case Category::Colors:
        p.objects.push_back({pick_shape(), pick_colour(), 1});
        break;
      case Category::TwoObject:
      case Category::ColorAttr: {
        const auto s1 = pick_shape();
        auto s2 = pick_shape();
        while (s2 == s1) s2 = pick_shape();
        const auto c1 = pick_colour();
        auto c2 = pick_colour();
        while (cat == Category::ColorAttr && c2 == c1) c2 = pick_colour();
        p.objects = {{s1, c1, 1}, {s2, c2, 1}};
        break;
      }
      case Category::Counting:
        p.objects.push_back({pick_shape(), pick_colour(), 2 + static_cast<int>(rng() % 3)});
        break;
      case Category::Position: {
        const NamedObject a{pick_shape(), pick_colour(), 1};
        NamedObject b{pick_shape(), pick_colour(), 1};
        while (b.shape == a.shape && b.colour == a.colour) b = {pick_shape(), pick_colour(), 1};
        p.objects = {a, b};
        p.relation = all_relations[rng() % all_relations.size()];
        break;
      }
    }
    return p;
  }

  int size_;
  std::uint64_t seed_;
};

struct EvalPrompt {
  std::string prompt;
  Category category;
  bool held_out = false;
};

// The fixed evaluation set: per category `per_category` prompts, a fifth of them held out.
inline std::vector<EvalPrompt> make_eval_prompts(int per_category = 50, std::uint64_t seed = 2024) {
  ShapesWorld world(32, seed);
  std::vector<EvalPrompt> out;
  for (auto cat : all_categories) {
    std::mt19937_64 rng(mix_seed(seed, static_cast<std::uint64_t>(cat)));
    for (int i = 0; i < per_category; ++i) {
      const bool held = i % 5 == 4;
      out.push_back({caption(world.sample_prompt(cat, held ? Split::HeldOut : Split::Train, rng)), cat, held});
    }
  }
  return out;
}

inline nlohmann::json eval_prompts_to_json(const std::vector<EvalPrompt>& prompts) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& p : prompts) a.push_back({{"prompt", p.prompt}, {"category", name(p.category)}, {"held_out", p.held_out}});
  return a;
}

inline std::vector<EvalPrompt> eval_prompts_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array()) throw InputError(where + ": expected a JSON array of {prompt, category, held_out}");
  std::vector<EvalPrompt> out;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const auto& e = j[i];
    if (!e.is_object() || !e.contains("prompt") || !e.contains("category") || !e["prompt"].is_string() ||
        !e["category"].is_string())
      throw InputError(where + ": entry " + std::to_string(i) + " needs string fields prompt and category");
    out.push_back({e["prompt"], category_from_name(e["category"].get<std::string>()), e.value("held_out", false)});
    parse_caption(out.back().prompt);  // validated now, not at evaluation time
  }
  return out;
}

}  // namespace diffuse::data
