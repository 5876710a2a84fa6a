// PNG writing and reading, with tEXt chunks that round-trip and are CRC-checked.
#include <catch2/catch.hpp>

#include "diffuse/io/png.hpp"
#include "test_util.hpp"

namespace t_png {

using namespace diffuse;
using Catch::Matchers::Contains;

TEST_CASE("PNG pixels and text chunks round-trip", "[io][png]") {
  test::TempDir dir;
  io::RGBImage img = xt::zeros<std::uint8_t>({std::size_t{4}, std::size_t{6}, std::size_t{3}});
  img(1, 2, 0) = 255;
  img(3, 5, 2) = 17;
  io::write_png(dir / "a.png", img, {{"parameters", "a red circle\nSteps: 20, Seed: 7"}, {"Software", "diffuse"}});
  const auto back = io::read_png(dir / "a.png");
  CHECK(back == img);
  const auto text = io::read_png_text(dir / "a.png");
  REQUIRE(text.size() == 2);
  CHECK(text[0].first == "Software");  // std::map order
  CHECK(text[1].second == "a red circle\nSteps: 20, Seed: 7");
}

TEST_CASE("damaged PNG files are clear errors", "[io][png]") {
  test::TempDir dir;
  io::RGBImage img = xt::zeros<std::uint8_t>({std::size_t{2}, std::size_t{2}, std::size_t{3}});
  io::write_png(dir / "a.png", img, {{"k", "value"}});
  auto bytes = test::read_text(dir / "a.png");
  const auto at = bytes.find("value");
  REQUIRE(at != std::string::npos);
  bytes[at] = 'V';  // the CRC no longer matches
  test::write_bytes(dir / "b.png", bytes);
  CHECK_THROWS_WITH(io::read_png_text(dir / "b.png"), Contains("bad CRC"));
  test::write_bytes(dir / "c.png", "not a png");
  CHECK_THROWS_WITH(io::read_png_text(dir / "c.png"), Contains("not a PNG"));
  CHECK_THROWS_WITH(io::read_png(dir / "c.png"), Contains("c.png"));
  CHECK_THROWS_AS(io::write_png(dir / "d.png", img, {{"", "x"}}), InputError);
}

}  // namespace t_png
