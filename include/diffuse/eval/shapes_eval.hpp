#pragma once
// A GenEval-style evaluator for the shapes world (torch-free): from an RGB image alone it finds
// the objects (colour classification, connected components, minimum area), classifies each shape
// by how much of its bounding box it fills, locates centroids, then checks a prompt's
// requirements. Scores per category and overall (the mean over categories, as GenEval reports).
//
// Strict mode (the default, used for the headline numbers) checks every named colour; lenient mode
// checks colours only where the category is about colour (colors, color_attr), like GenEval.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/data/shapes_captions.hpp"
#include "diffuse/data/shapes_dataset.hpp"
#include "diffuse/data/shapes_scene.hpp"

namespace diffuse::eval {

struct DetectedObject {
  data::Shape shape;
  data::Colour colour;
  double cx, cy;  // centroid, pixels
  int area;       // pixels
  double fill;    // area / bounding-box area: square ~1, circle ~pi/4, triangle ~1/2
};

struct ShapesEvalOptions {
  bool strict = true;
  double colour_tolerance = 70.0;  // max RGB distance of a pixel to its palette colour
  double min_area_fraction = 0.006;
  double relation_margin = 0.1;    // fraction of the image size
};

inline std::vector<DetectedObject> detect_objects(const io::RGBImage& img, const ShapesEvalOptions& opt = {}) {
  const int h = static_cast<int>(img.shape()[0]), w = static_cast<int>(img.shape()[1]);
  std::vector<int> label(static_cast<std::size_t>(h * w), -1);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      double best = 1e30;
      int which = -1;
      for (std::size_t c = 0; c < data::all_colours.size(); ++c) {
        const auto p = data::rgb(data::all_colours[c]);
        double d = 0;
        for (int k = 0; k < 3; ++k) d += std::pow(double(img(y, x, k)) - p[k], 2);
        if (d < best) best = d, which = static_cast<int>(c);
      }
      if (std::sqrt(best) <= opt.colour_tolerance) label[y * w + x] = which;
    }
  const int min_area = std::max(4, static_cast<int>(opt.min_area_fraction * w * h));
  std::vector<char> seen(label.size(), 0);
  std::vector<DetectedObject> out;
  std::vector<int> stack;
  for (int start = 0; start < h * w; ++start) {
    if (label[start] < 0 || seen[start]) continue;
    const int lab = label[start];
    int area = 0, x0 = w, x1 = -1, y0 = h, y1 = -1;
    double sx = 0, sy = 0;
    stack.assign(1, start);
    seen[start] = 1;
    while (!stack.empty()) {  // 4-connected flood fill
      const int i = stack.back();
      stack.pop_back();
      const int x = i % w, y = i / w;
      ++area, sx += x + 0.5, sy += y + 0.5;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
      const int nb[4][2] = {{x - 1, y}, {x + 1, y}, {x, y - 1}, {x, y + 1}};
      for (const auto& n : nb) {
        if (n[0] < 0 || n[0] >= w || n[1] < 0 || n[1] >= h) continue;
        const int j = n[1] * w + n[0];
        if (!seen[j] && label[j] == lab) seen[j] = 1, stack.push_back(j);
      }
    }
    if (area < min_area) continue;
    // Soft coverage: anti-aliased edge pixels lie between the background and the object's colour;
    // their fraction alpha recovers the true area, so the features hold at 32 px as at 64 px.
    const auto c = data::rgb(data::all_colours[lab]);
    const auto bg = data::background_rgb;
    double cb2 = 0;
    for (int k = 0; k < 3; ++k) cb2 += std::pow(double(c[k]) - bg[k], 2);
    auto alpha = [&](int x, int y) {
      if (x < 0 || y < 0 || x >= w || y >= h) return 0.0;
      double dot = 0, off = 0;
      for (int k = 0; k < 3; ++k) dot += (double(img(y, x, k)) - bg[k]) * (double(c[k]) - bg[k]);
      const double a = std::clamp(dot / cb2, 0.0, 1.0);
      for (int k = 0; k < 3; ++k) off += std::pow(double(img(y, x, k)) - (bg[k] + a * (double(c[k]) - bg[k])), 2);
      return std::sqrt(off) > opt.colour_tolerance * 0.6 ? 0.0 : a;  // not a blend of this object
    };
    double soft = 0, my = 0;
    int sx0 = w, sx1 = -1, sy0 = h, sy1 = -1;
    for (int y = y0 - 1; y <= y1 + 1; ++y)
      for (int x = x0 - 1; x <= x1 + 1; ++x) {
        const double a = alpha(x, y);
        soft += a, my += a * (y + 0.5);
        if (a > 0.6) sx0 = std::min(sx0, x), sx1 = std::max(sx1, x), sy0 = std::min(sy0, y), sy1 = std::max(sy1, y);
      }
    const double bw = sx1 - sx0 + 1, bh = sy1 - sy0 + 1;
    const double fill = soft / (bw * bh);
    // A triangle (pointing up) carries its mass low: centroid below the box centre by ~1/6 of its height.
    const double drop = (my / soft - (sy0 + bh / 2.0)) / bh;
    // A square fills the corners of its box; a disc leaves them nearly empty.
    const double corners = (alpha(sx0, sy0) + alpha(sx1, sy0) + alpha(sx0, sy1) + alpha(sx1, sy1)) / 4.0;
    const data::Shape shape = drop > 0.07 ? data::Shape::Triangle : corners > 0.3 ? data::Shape::Square : data::Shape::Circle;
    out.push_back({shape, data::all_colours[lab], sx / area, sy / area, area, fill});
  }
  return out;
}

// Does the image (as detected objects) satisfy the prompt?
inline bool satisfies(const data::Prompt& p, data::Category cat, const std::vector<DetectedObject>& objs, int image_size,
                      const ShapesEvalOptions& opt = {}) {
  const bool colour_matters = opt.strict || cat == data::Category::Colors || cat == data::Category::ColorAttr;
  auto matches = [&](const DetectedObject& d, const data::NamedObject& o) {
    return d.shape == o.shape && (!colour_matters || d.colour == o.colour);
  };
  // Each named object in its count; and no extra objects of the named shapes.
  std::map<data::Shape, int> named_per_shape;
  for (const auto& o : p.objects) {
    named_per_shape[o.shape] += o.count;
    int n = 0;
    for (const auto& d : objs) n += matches(d, o);
    if (n != o.count) return false;
  }
  for (const auto& [shape, n] : named_per_shape) {
    int found = 0;
    for (const auto& d : objs) found += d.shape == shape;
    if (found != n) return false;
  }
  if (p.relation) {
    const DetectedObject *a = nullptr, *b = nullptr;
    for (const auto& d : objs) {
      if (matches(d, p.objects[0]) && !a) a = &d;
      else if (matches(d, p.objects[1]) && !b) b = &d;
    }
    if (!a || !b) return false;
    const data::Object oa{a->shape, a->colour, a->cx, a->cy, 0}, ob{b->shape, b->colour, b->cx, b->cy, 0};
    return data::ShapesWorld::relation_holds(*p.relation, oa, ob, opt.relation_margin * image_size);
  }
  return true;
}

struct ShapesScore {
  std::map<std::string, std::array<int, 2>> per_category;          // correct, total
  std::map<std::string, std::array<int, 2>> held_out_per_category;  // the held-out prompts only
  double category_score(const std::string& c) const {
    const auto& v = per_category.at(c);
    return v[1] ? double(v[0]) / v[1] : 0.0;
  }
  // GenEval's overall: the mean of the category scores.
  double overall() const {
    double s = 0;
    for (const auto& [c, v] : per_category) s += v[1] ? double(v[0]) / v[1] : 0.0;
    return per_category.empty() ? 0.0 : s / per_category.size();
  }
  double held_out_overall() const {
    int ok = 0, n = 0;
    for (const auto& [c, v] : held_out_per_category) ok += v[0], n += v[1];
    return n ? double(ok) / n : 0.0;
  }
  void add(data::Category cat, bool held_out, bool correct) {
    auto& v = per_category[std::string(data::name(cat))];
    v[0] += correct, v[1] += 1;
    if (held_out) {
      auto& h = held_out_per_category[std::string(data::name(cat))];
      h[0] += correct, h[1] += 1;
    }
  }
  std::string table() const {
    std::string s = "category        score   correct/total   held-out\n";
    char buf[128];
    for (const auto& [c, v] : per_category) {
      const auto it = held_out_per_category.find(c);
      std::snprintf(buf, sizeof buf, "%-14s  %.3f   %4d/%-4d       %s\n", c.c_str(), v[1] ? double(v[0]) / v[1] : 0.0, v[0],
                    v[1], it == held_out_per_category.end() ? "-" : (std::to_string(it->second[0]) + "/" + std::to_string(it->second[1])).c_str());
      s += buf;
    }
    std::snprintf(buf, sizeof buf, "overall         %.3f   (mean over categories); held-out %.3f\n", overall(), held_out_overall());
    return s + buf;
  }
  nlohmann::json to_json() const {
    nlohmann::json j;
    j["overall"] = overall();
    j["held_out_overall"] = held_out_overall();
    for (const auto& [c, v] : per_category) j["categories"][c] = {{"score", v[1] ? double(v[0]) / v[1] : 0.0}, {"correct", v[0]}, {"total", v[1]}};
    for (const auto& [c, v] : held_out_per_category) j["held_out"][c] = {{"correct", v[0]}, {"total", v[1]}};
    return j;
  }
};

inline bool evaluate_image(const io::RGBImage& img, const data::EvalPrompt& p, const ShapesEvalOptions& opt = {}) {
  return satisfies(data::parse_caption(p.prompt), p.category, detect_objects(img, opt), static_cast<int>(img.shape()[1]), opt);
}

}  // namespace diffuse::eval
