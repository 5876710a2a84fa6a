#pragma once
// A small captioned image folder written by tests (LoRA fine-tuning, training from scratch).
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <xtensor/xbuilder.hpp>

#include "diffuse/io/png.hpp"

namespace diffuse::test {

// 8 captioned images: 4 square (64x64), 4 wide (96x48); colour blocks whose colour the caption
// names. One more image has no caption.
inline void write_checker_folder(const std::filesystem::path& d) {
  std::filesystem::create_directories(d);
  const std::vector<std::pair<std::string, std::array<std::uint8_t, 3>>> colours = {
      {"red", {220, 30, 30}}, {"green", {30, 200, 60}}, {"blue", {40, 60, 220}}, {"yellow", {230, 220, 40}}};
  int k = 0;
  for (const auto& [w, h] : {std::pair{64, 64}, std::pair{96, 48}})
    for (const auto& [name, rgb] : colours) {
      io::RGBImage img = xt::zeros<std::uint8_t>({static_cast<std::size_t>(h), static_cast<std::size_t>(w), std::size_t{3}});
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          for (int c = 0; c < 3; ++c) img(y, x, c) = (x / 16 + y / 16) % 2 ? rgb[c] : static_cast<std::uint8_t>(rgb[c] / 3);
      const auto stem = "img" + std::to_string(k++);
      io::write_png(d / (stem + ".png"), img);
      std::ofstream(d / (stem + ".txt")) << "a " << name << " checkerboard";
    }
  io::write_png(d / "uncaptioned.png", xt::zeros<std::uint8_t>({std::size_t{16}, std::size_t{16}, std::size_t{3}}));
}

}  // namespace diffuse::test
