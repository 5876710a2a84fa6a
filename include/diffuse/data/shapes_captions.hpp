#pragma once
// Captions of the shapes world (torch-free), in the six GenEval categories the SD3 paper reports
// (Ghosh et al. 2023): single object, two objects, counting, colours, position, colour attribution.
//   single_object   "a red circle"                     (lenient check: a circle)
//   two_object      "a red circle and a blue square"   (lenient: a circle and a square)
//   counting        "three green triangles"            (lenient: exactly three triangles)
//   colors          "a yellow square"                  (a yellow square)
//   position        "a red circle above a blue square" (the relation, with a margin)
//   color_attr      "a red circle and a green triangle"(each shape in its own colour)
// A caption parses back to a Prompt: the objects it names, their counts, and the relation.
#include <sstream>
#include <string>
#include <vector>

#include "diffuse/core/error.hpp"
#include "diffuse/data/shapes_scene.hpp"

namespace diffuse::data {

enum class Category : std::uint8_t { SingleObject, TwoObject, Counting, Colors, Position, ColorAttr };
inline constexpr std::array<Category, 6> all_categories = {Category::SingleObject, Category::TwoObject,
                                                           Category::Counting,     Category::Colors,
                                                           Category::Position,     Category::ColorAttr};
constexpr std::string_view name(Category c) {
  switch (c) {
    case Category::SingleObject: return "single_object";
    case Category::TwoObject: return "two_object";
    case Category::Counting: return "counting";
    case Category::Colors: return "colors";
    case Category::Position: return "position";
    case Category::ColorAttr: return "color_attr";
  }
  return "?";
}
inline Category category_from_name(std::string_view s) {
  for (auto c : all_categories)
    if (name(c) == s) return c;
  throw InputError("shapes: unknown category '" + std::string(s) + "'");
}

struct NamedObject {
  Shape shape;
  Colour colour;
  int count = 1;
  bool operator==(const NamedObject&) const = default;
};

// What a caption asks for. With a relation, objects[0] REL objects[1].
struct Prompt {
  std::vector<NamedObject> objects;
  std::optional<Relation> relation;
  bool operator==(const Prompt&) const = default;
};

inline constexpr std::array<std::string_view, 5> count_words = {"zero", "one", "two", "three", "four"};

inline std::string caption(const Prompt& p) {
  auto one = [](const NamedObject& o) {
    if (o.count == 1)
      return std::string(o.colour == Colour::Orange ? "an " : "a ") + std::string(name(o.colour)) + " " +
             std::string(name(o.shape));
    return std::string(count_words.at(o.count)) + " " + std::string(name(o.colour)) + " " + std::string(name(o.shape)) + "s";
  };
  if (p.objects.empty()) throw InputError("shapes: a prompt needs at least one object");
  if (p.relation) return one(p.objects.at(0)) + " " + std::string(name(*p.relation)) + " " + one(p.objects.at(1));
  std::string s = one(p.objects[0]);
  for (std::size_t i = 1; i < p.objects.size(); ++i) s += " and " + one(p.objects[i]);
  return s;
}

// Inverse of `caption`; anything else is an InputError naming the word that did not fit.
inline Prompt parse_caption(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> w;
  for (std::string t; in >> t;) w.push_back(t);
  std::size_t i = 0;
  auto fail = [&](const std::string& why) -> Prompt {
    throw InputError("shapes: cannot parse caption '" + text + "': " + why);
  };
  auto object = [&]() -> NamedObject {
    NamedObject o{Shape::Circle, Colour::Red, 0};
    if (i >= w.size()) fail("expected 'a' or a number at the end");
    if (w[i] == "a" || w[i] == "an") o.count = 1;
    for (int n = 2; n <= 4; ++n)
      if (w[i] == count_words[n]) o.count = n;
    if (o.count == 0) fail("expected 'a' or two/three/four, got '" + w[i] + "'");
    ++i;
    if (i >= w.size()) fail("missing colour");
    bool found = false;
    for (auto c : all_colours)
      if (w[i] == name(c)) o.colour = c, found = true;
    if (!found) fail("unknown colour '" + w[i] + "'");
    ++i;
    if (i >= w.size()) fail("missing shape");
    found = false;
    for (auto s : all_shapes) {
      const std::string singular(name(s)), plural = singular + "s";
      if (w[i] == (o.count == 1 ? singular : plural)) o.shape = s, found = true;
    }
    if (!found) fail("unknown shape '" + w[i] + "' for count " + std::to_string(o.count));
    ++i;
    return o;
  };
  Prompt p;
  p.objects.push_back(object());
  if (i == w.size()) return p;
  if (w[i] == "and") {
    while (i < w.size()) {
      if (w[i] != "and") fail("expected 'and', got '" + w[i] + "'");
      ++i;
      p.objects.push_back(object());
    }
    return p;
  }
  for (auto r : all_relations) {
    const std::string rn(name(r));
    const bool two_words = rn.find(' ') != std::string::npos;
    const std::string got = two_words && i + 1 < w.size() ? w[i] + " " + w[i + 1] : w[i];
    if (got == rn) {
      i += two_words ? 2 : 1;
      p.relation = r;
      p.objects.push_back(object());
      if (i != w.size()) fail("unexpected words after the second object");
      if (p.objects[0].count != 1 || p.objects[1].count != 1) fail("relations take single objects");
      return p;
    }
  }
  return fail("unexpected word '" + w[i] + "'");
}

}  // namespace diffuse::data
