#pragma once
// The shapes world (torch-free): scenes of 1-4 coloured shapes on a plain background, their
// captions, and an anti-aliased renderer to xtensor RGB images. A small text-to-image task on which
// the whole library runs and is measured exactly (eval/shapes_eval.hpp), with nothing to download.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "diffuse/core/error.hpp"
#include "diffuse/io/png.hpp"

namespace diffuse::data {

enum class Shape : std::uint8_t { Circle, Square, Triangle };
enum class Colour : std::uint8_t { Red, Green, Blue, Yellow, Purple, Orange };
enum class Relation : std::uint8_t { Above, Below, LeftOf, RightOf };

inline constexpr std::array<Shape, 3> all_shapes = {Shape::Circle, Shape::Square, Shape::Triangle};
inline constexpr std::array<Colour, 6> all_colours = {Colour::Red,    Colour::Green,  Colour::Blue,
                                                      Colour::Yellow, Colour::Purple, Colour::Orange};
inline constexpr std::array<Relation, 4> all_relations = {Relation::Above, Relation::Below, Relation::LeftOf,
                                                          Relation::RightOf};

constexpr std::string_view name(Shape s) {
  switch (s) {
    case Shape::Circle: return "circle";
    case Shape::Square: return "square";
    case Shape::Triangle: return "triangle";
  }
  return "?";
}
constexpr std::string_view name(Colour c) {
  switch (c) {
    case Colour::Red: return "red";
    case Colour::Green: return "green";
    case Colour::Blue: return "blue";
    case Colour::Yellow: return "yellow";
    case Colour::Purple: return "purple";
    case Colour::Orange: return "orange";
  }
  return "?";
}
constexpr std::string_view name(Relation r) {
  switch (r) {
    case Relation::Above: return "above";
    case Relation::Below: return "below";
    case Relation::LeftOf: return "left of";
    case Relation::RightOf: return "right of";
  }
  return "?";
}

using RGB = std::array<std::uint8_t, 3>;

// Well separated in RGB (pairwise distance >= 100) and far from the background.
constexpr RGB rgb(Colour c) {
  switch (c) {
    case Colour::Red: return {215, 25, 25};
    case Colour::Green: return {30, 170, 50};
    case Colour::Blue: return {30, 70, 230};
    case Colour::Yellow: return {240, 235, 0};
    case Colour::Purple: return {140, 40, 180};
    case Colour::Orange: return {255, 135, 0};
  }
  return {0, 0, 0};
}
inline constexpr RGB background_rgb = {245, 245, 245};

struct Object {
  Shape shape = Shape::Circle;
  Colour colour = Colour::Red;
  double cx = 0, cy = 0;  // centre, in pixels (x right, y down)
  double size = 0;        // the radius of a circle of the same visual size
};

// The extent used to keep objects apart and inside the image.
inline double bounding_radius(const Object& o) {
  switch (o.shape) {
    case Shape::Circle: return o.size;
    case Shape::Square: return o.size * 0.886 * std::sqrt(2.0);  // half side 0.886 r: a circle's area
    case Shape::Triangle: return o.size * 1.3;                   // circumradius
  }
  return o.size;
}

inline bool covers(const Object& o, double x, double y) {
  const double dx = x - o.cx, dy = y - o.cy;
  switch (o.shape) {
    case Shape::Circle: return dx * dx + dy * dy <= o.size * o.size;
    case Shape::Square: {
      const double h = 0.886 * o.size;
      return std::abs(dx) <= h && std::abs(dy) <= h;
    }
    case Shape::Triangle: {  // equilateral, pointing up, centroid at the centre
      const double r = 1.3 * o.size;
      const double ax = 0, ay = -r, bx = -r * 0.8660254, by = r * 0.5, cx = r * 0.8660254, cy = r * 0.5;
      auto edge = [](double x0, double y0, double x1, double y1, double px, double py) {
        return (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0);
      };
      const double e0 = edge(ax, ay, bx, by, dx, dy), e1 = edge(bx, by, cx, cy, dx, dy), e2 = edge(cx, cy, ax, ay, dx, dy);
      return (e0 <= 0 && e1 <= 0 && e2 <= 0) || (e0 >= 0 && e1 >= 0 && e2 >= 0);
    }
  }
  return false;
}

struct Scene {
  int width = 32, height = 32;
  std::vector<Object> objects;
};

// Anti-aliased by 4 x 4 supersampling per pixel.
inline io::RGBImage render(const Scene& scene) {
  if (scene.width < 8 || scene.height < 8) throw InputError("shapes: image size must be at least 8x8");
  io::RGBImage img({static_cast<std::size_t>(scene.height), static_cast<std::size_t>(scene.width), 3});
  constexpr int ss = 4;
  for (int y = 0; y < scene.height; ++y)
    for (int x = 0; x < scene.width; ++x) {
      double acc[3] = {0, 0, 0};
      for (int sy = 0; sy < ss; ++sy)
        for (int sx = 0; sx < ss; ++sx) {
          const double px = x + (sx + 0.5) / ss, py = y + (sy + 0.5) / ss;
          RGB c = background_rgb;
          for (const auto& o : scene.objects)
            if (covers(o, px, py)) c = rgb(o.colour);
          for (int k = 0; k < 3; ++k) acc[k] += c[k];
        }
      for (int k = 0; k < 3; ++k) img(y, x, k) = static_cast<std::uint8_t>(std::lround(acc[k] / (ss * ss)));
    }
  return img;
}

}  // namespace diffuse::data
