// io::lanczos_resize against Pillow's Image.resize(LANCZOS), the resize the SD3.5 reference applies
// to init and control images: the expected bytes below were printed by Pillow 9.4 (Debian 12's
// python3-pil) for the pattern image() makes; and what any resize must keep (a constant image).
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "diffuse/io/lanczos_resize.hpp"

namespace t_lanczos_resize {

using diffuse::io::RGBImage;

// 11 x 7: R = (23x + 7y) mod 256, G = (5x^2 + 31y) mod 256, B = 255 on a checkerboard of 2x1 cells.
RGBImage image() {
  RGBImage img({7, 11, 3});
  for (std::size_t y = 0; y < 7; ++y)
    for (std::size_t x = 0; x < 11; ++x) {
      img(y, x, 0) = static_cast<std::uint8_t>((x * 23 + y * 7) % 256);
      img(y, x, 1) = static_cast<std::uint8_t>((x * x * 5 + y * 31) % 256);
      img(y, x, 2) = static_cast<std::uint8_t>(((x / 2 + y) % 2) * 255);
    }
  return img;
}

// The sum of the bytes and sum(byte * flat index) mod 1000003, as printed next to Pillow's output.
std::pair<long long, long long> digest(const RGBImage& o) {
  long long sum = 0, weighted = 0;
  for (std::size_t i = 0; i < o.size(); ++i) {
    sum += o.data()[i];
    weighted += static_cast<long long>(o.data()[i]) * static_cast<long long>(i);
  }
  return {sum, weighted % 1000003};
}

TEST_CASE("Lanczos resize gives Pillow's bytes: shrinking, enlarging, one axis at a time", "[io][resize]") {
  const auto img = image();
  const auto down = diffuse::io::lanczos_resize(img, 6, 4);
  REQUIRE(down.shape(0) == 4);
  REQUIRE(down.shape(1) == 6);
  const std::vector<int> pillow{13,  13,  102, 54,  36,  149, 97,  97,  109, 139, 183, 142, 182, 111, 120, 220, 143, 124,
                                25,  66,  133, 66,  85,  123, 109, 163, 132, 151, 146, 124, 192, 114, 129, 244, 137, 128,
                                37,  122, 133, 78,  146, 123, 121, 216, 132, 161, 90,  124, 219, 138, 129, 150, 107, 128,
                                49,  173, 102, 90,  211, 149, 133, 107, 109, 171, 87,  142, 236, 189, 120, 117, 113, 124};
  std::vector<int> ours(down.data(), down.data() + down.size());
  CHECK(ours == pillow);
  using D = std::pair<long long, long long>;
  CHECK(digest(diffuse::io::lanczos_resize(img, 16, 9)) == D{54301, 244530});   // enlarging
  CHECK(digest(diffuse::io::lanczos_resize(img, 11, 3)) == D{12453, 650528});   // height only
  CHECK(digest(diffuse::io::lanczos_resize(img, 5, 7)) == D{13252, 725403});    // width only
  CHECK(digest(diffuse::io::lanczos_resize(img, 32, 20)) == D{241550, 237680});
}

TEST_CASE("Lanczos resize keeps a constant image and the same size; a bad size is an error", "[io][resize]") {
  RGBImage flat({9, 13, 3});
  flat.fill(77);
  for (auto [w, h] : {std::pair{4, 3}, {40, 17}, {13, 2}, {1, 1}}) {
    const auto o = diffuse::io::lanczos_resize(flat, w, h);
    REQUIRE(o.shape(1) == static_cast<std::size_t>(w));
    for (std::size_t i = 0; i < o.size(); ++i) REQUIRE(o.data()[i] == 77);
  }
  const auto img = image();
  const bool same = diffuse::io::lanczos_resize(img, 11, 7) == img;
  CHECK(same);
  CHECK_THROWS_WITH(diffuse::io::lanczos_resize(img, 0, 7), Catch::Matchers::Contains("positive"));
}

}  // namespace t_lanczos_resize
