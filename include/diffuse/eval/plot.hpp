#pragma once
// Line plots rendered to an RGB image (torch-free), for the curves the library documents (timestep
// densities, weightings, loss curves). Text is drawn with stb_easy_font's segment font.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"  // stb_easy_font is all static functions
#include <stb/stb_easy_font.h>
#pragma GCC diagnostic pop
#include <xtensor/xtensor.hpp>

#include "diffuse/io/png.hpp"

namespace diffuse::eval {

using Color = std::array<std::uint8_t, 3>;

struct Series {
  std::string label;
  std::vector<double> x, y;
  Color color{0, 0, 0};
};

struct Panel {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  std::optional<double> y_max;  // clip the y range (densities with integrable peaks)
  double y_min = 0.0;
};

// A qualitative palette (Okabe & Ito 2008, colour-blind safe) followed by darker extras.
inline Color palette(std::size_t i) {
  static const Color colors[] = {{0, 114, 178},  {213, 94, 0},   {0, 158, 115},  {204, 121, 167},
                                 {230, 159, 0},  {86, 180, 233}, {0, 0, 0},      {120, 60, 20},
                                 {100, 100, 100}, {150, 0, 150}, {0, 90, 60},    {180, 30, 30}};
  return colors[i % (sizeof colors / sizeof colors[0])];
}

class Canvas {
 public:
  Canvas(int width, int height) : img_(xt::xtensor<std::uint8_t, 3>::shape_type{std::size_t(height), std::size_t(width), 3}) {
    img_.fill(255);
  }
  int width() const { return static_cast<int>(img_.shape()[1]); }
  int height() const { return static_cast<int>(img_.shape()[0]); }
  const io::RGBImage& image() const { return img_; }

  void fill(int x0, int y0, int x1, int y1, Color c) {
    x0 = std::max(x0, 0), y0 = std::max(y0, 0), x1 = std::min(x1, width()), y1 = std::min(y1, height());
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x)
        for (int k = 0; k < 3; ++k) img_(y, x, k) = c[k];
  }
  // A segment drawn with a square brush of the given width.
  void line(double xa, double ya, double xb, double yb, Color c, int thickness = 2) {
    const int steps = static_cast<int>(std::max(std::abs(xb - xa), std::abs(yb - ya))) + 1;
    for (int i = 0; i <= steps; ++i) {
      const double f = static_cast<double>(i) / steps;
      const int x = static_cast<int>(std::lround(xa + f * (xb - xa))), y = static_cast<int>(std::lround(ya + f * (yb - ya)));
      fill(x - thickness / 2, y - thickness / 2, x - thickness / 2 + thickness, y - thickness / 2 + thickness, c);
    }
  }
  // Text with its top-left corner at (x, y), `scale` pixels per font unit.
  void text(double x, double y, const std::string& s, Color c, int scale = 1) {
    std::vector<char> vbuf(s.size() * 270 + 1000);
    std::string copy = s;
    const int quads = stb_easy_font_print(0, 0, copy.data(), nullptr, vbuf.data(), static_cast<int>(vbuf.size()));
    const float* v = reinterpret_cast<const float*>(vbuf.data());
    for (int q = 0; q < quads; ++q) {
      const float* a = v + q * 16;  // 4 vertices of (x, y, z, rgba) = 4 floats each
      const float* b = a + 8;
      fill(static_cast<int>(x + a[0] * scale), static_cast<int>(y + a[1] * scale), static_cast<int>(x + b[0] * scale),
           static_cast<int>(y + b[1] * scale), c);
    }
  }
  static int text_width(const std::string& s, int scale = 1) {
    std::string copy = s;
    return stb_easy_font_width(copy.data()) * scale;
  }

 private:
  io::RGBImage img_;
};

namespace plot_detail {
inline std::string tick(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", std::abs(v) < 1e-12 ? 0.0 : v);
  return buf;
}
inline double nice_step(double range) {
  const double raw = range / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}
}  // namespace plot_detail

// Panels side by side, each `panel_width` x `height` pixels.
inline io::RGBImage render_plot(const std::vector<Panel>& panels, int panel_width = 560, int height = 420) {
  Canvas cv(panel_width * static_cast<int>(panels.size()), height);
  const Color axis{40, 40, 40}, grid{225, 225, 225};
  for (std::size_t p = 0; p < panels.size(); ++p) {
    const auto& panel = panels[p];
    const int ox = static_cast<int>(p) * panel_width;
    const int left = ox + 60, right = ox + panel_width - 15, top = 40, bottom = height - 45;
    double xmin = 1e300, xmax = -1e300, ymax = -1e300;
    for (const auto& s : panel.series)
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        xmin = std::min(xmin, s.x[i]), xmax = std::max(xmax, s.x[i]);
        if (std::isfinite(s.y[i])) ymax = std::max(ymax, s.y[i]);
      }
    if (panel.y_max) ymax = *panel.y_max;
    const double ymin = panel.y_min;
    if (!(ymax > ymin)) ymax = ymin + 1;
    if (!(xmax > xmin)) xmin = 0, xmax = 1;
    auto px = [&](double x) { return left + (x - xmin) / (xmax - xmin) * (right - left); };
    auto py = [&](double y) { return bottom - (std::clamp(y, ymin, ymax) - ymin) / (ymax - ymin) * (bottom - top); };
    // grid and ticks
    const double xs = plot_detail::nice_step(xmax - xmin), ys = plot_detail::nice_step(ymax - ymin);
    for (double x = std::ceil(xmin / xs) * xs; x <= xmax + 1e-9; x += xs) {
      cv.line(px(x), top, px(x), bottom, grid, 1);
      const auto s = plot_detail::tick(x);
      cv.text(px(x) - Canvas::text_width(s) / 2.0, bottom + 6, s, axis);
    }
    for (double y = std::ceil(ymin / ys) * ys; y <= ymax + 1e-9; y += ys) {
      cv.line(left, py(y), right, py(y), grid, 1);
      const auto s = plot_detail::tick(y);
      cv.text(left - 6 - Canvas::text_width(s), py(y) - 4, s, axis);
    }
    cv.line(left, bottom, right, bottom, axis, 1);
    cv.line(left, top, left, bottom, axis, 1);
    cv.text(ox + (panel_width - Canvas::text_width(panel.title, 2)) / 2.0, 10, panel.title, axis, 2);
    cv.text((left + right - Canvas::text_width(panel.x_label)) / 2.0, bottom + 22, panel.x_label, axis);
    cv.text(ox + 6, top - 14, panel.y_label, axis);
    // curves
    for (const auto& s : panel.series)
      for (std::size_t i = 1; i < s.x.size(); ++i)
        if (std::isfinite(s.y[i - 1]) && std::isfinite(s.y[i]))
          cv.line(px(s.x[i - 1]), py(s.y[i - 1]), px(s.x[i]), py(s.y[i]), s.color, 2);
    // legend
    int ly = top + 6;
    for (const auto& s : panel.series) {
      const int lx = right - 10 - Canvas::text_width(s.label) - 18;
      cv.fill(lx - 4, ly - 3, right - 4, ly + 11, {255, 255, 255});
      cv.fill(lx, ly + 2, lx + 12, ly + 6, s.color);
      cv.text(lx + 16, ly, s.label, axis);
      ly += 13;
    }
  }
  return cv.image();
}

}  // namespace diffuse::eval
