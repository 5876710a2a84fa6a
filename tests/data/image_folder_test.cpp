// The fine-tuning data: image folders (captions from .txt files or metadata.jsonl, PNG / JPEG /
// WebP, problems reported by name and skipped), aspect-ratio buckets, and the shapes world as a
// captioned-image dataset of one category. Fixtures are written by the tests.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include <xtensor/xsort.hpp>
#include <xtensor/xreducer.hpp>

#include <webp/encode.h>

#include "diffuse/data/aspect_buckets.hpp"
#include "diffuse/data/dataset.hpp"
#include "diffuse/data/image_folder.hpp"
#include "diffuse/io/image_file.hpp"
#include "diffuse/io/png.hpp"
#include "test_util.hpp"

namespace t_image_folder {

using namespace diffuse;
using Catch::Matchers::Contains;

io::RGBImage gradient(int w, int h) {
  io::RGBImage img = xt::zeros<std::uint8_t>({static_cast<std::size_t>(h), static_cast<std::size_t>(w), std::size_t{3}});
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      img(y, x, 0) = static_cast<std::uint8_t>(x * 255 / std::max(1, w - 1));
      img(y, x, 1) = static_cast<std::uint8_t>(y * 255 / std::max(1, h - 1));
      img(y, x, 2) = static_cast<std::uint8_t>((x + y) % 256);
    }
  return img;
}

void write_text(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p);
  out << s;
}

static_assert(data::CaptionedImages<data::ImageFolder>);
static_assert(data::CaptionedImages<data::ShapesImages>);

TEST_CASE("an image folder takes .txt captions and metadata.jsonl, and reports what it skips by name", "[data][finetune]") {
  test::TempDir dir;
  const auto d = dir.path();
  std::filesystem::create_directories(d / "sub");
  io::write_png(d / "a.png", gradient(40, 30));
  write_text(d / "a.txt", "  a red circle\n");
  {  // JPEG through stb_image_write
    const auto img = gradient(24, 48);
    REQUIRE(stbi_write_jpg((d / "sub/b.jpg").c_str(), 24, 48, 3, img.data(), 95) != 0);
  }
  {  // WebP (lossless: the pixels read back exactly)
    const auto img = gradient(20, 16);
    std::uint8_t* out = nullptr;
    const auto n = WebPEncodeLosslessRGB(img.data(), 20, 16, 20 * 3, &out);
    REQUIRE(n > 0);
    std::ofstream(d / "sub/e.webp", std::ios::binary).write(reinterpret_cast<const char*>(out), static_cast<std::streamsize>(n));
    WebPFree(out);
  }
  io::write_png(d / "c.png", gradient(8, 8));                  // no caption anywhere
  io::write_png(d / "f.png", gradient(8, 8));
  write_text(d / "f.txt", " \n");                              // an empty caption file
  test::write_bytes(d / "broken.png", "\x89PNG\r\n\x1a\n-not-really");  // listed; unreadable when read
  write_text(d / "broken.txt", "broken");
  write_text(d / "metadata.jsonl",
             "{\"file_name\": \"sub/b.jpg\", \"text\": \"a blue square\"}\n"
             "{not json\n"
             "{\"file_name\": \"gone.png\", \"text\": \"x\"}\n"
             "{\"file_name\": \"sub/e.webp\"}\n"
             "\n"
             "{\"file_name\": \"a.png\", \"text\": \"from metadata\"}\n");
  write_text(d / "sub/metadata.jsonl", "{\"file_name\": \"e.webp\", \"text\": \"a green triangle\"}\n");

  const data::ImageFolder f(d);
  std::map<std::string, std::string> captions;
  for (std::size_t i = 0; i < f.size(); ++i) captions[f.file(i).lexically_relative(d).string()] = f.caption(i);
  CHECK(captions == std::map<std::string, std::string>{{"a.png", "from metadata"},  // metadata.jsonl wins over a.txt
                                                       {"broken.png", "broken"},
                                                       {"sub/b.jpg", "a blue square"},
                                                       {"sub/e.webp", "a green triangle"}});
  std::string report;
  for (const auto& s : f.skipped()) report += s.file + ": " + s.reason + "\n";
  INFO(report);
  CHECK(f.skipped().size() == 5);
  CHECK_THAT(report, Contains("metadata.jsonl:2: not a JSON object"));
  CHECK_THAT(report, Contains("metadata.jsonl:3: gone.png: no such image"));
  CHECK_THAT(report, Contains("metadata.jsonl:4: needs string fields"));
  CHECK_THAT(report, Contains("c.png: no caption (no c.txt"));
  CHECK_THAT(report, Contains("f.png: empty caption file f.txt"));

  for (std::size_t i = 0; i < f.size(); ++i) {
    const auto name = f.file(i).filename().string();
    if (name == "broken.png") {
      CHECK_THROWS_AS(f.image(i), InputError);
      CHECK_THROWS_WITH(f.image(i), Contains("broken.png: cannot read image"));
    } else if (name == "e.webp") {
      const bool same = f.image(i) == gradient(20, 16);  // xtensor's == is the whole-array comparison
      CHECK(same);
    } else if (name == "b.jpg") {
      const auto img = f.image(i);
      CHECK(img.shape(0) == 48);
      CHECK(img.shape(1) == 24);
    }
  }
  CHECK_THROWS_WITH(data::ImageFolder(d / "nope"), Contains("nope: not a folder of images"));
  test::write_bytes(d / "sub/trunc.webp", "RIFF\x10\0\0\0WEBPVP8 ");
  CHECK_THROWS_WITH(io::read_image(d / "sub/trunc.webp"), Contains("trunc.webp: cannot read image"));
}

TEST_CASE("aspect buckets keep the area near resolution^2, sides on the grid, ratios bounded", "[data][finetune]") {
  const auto b = data::aspect_buckets(64, 16);
  REQUIRE(b.size() >= 3);
  CHECK(std::find(b.begin(), b.end(), data::Bucket{64, 64}) != b.end());
  for (const auto& x : b) {
    INFO(x.width << "x" << x.height);
    CHECK(x.width % 16 == 0);
    CHECK(x.height % 16 == 0);
    CHECK(std::abs(x.width * x.height - 64 * 64) <= 64 * 16);  // within one grid row / column
    const double r = static_cast<double>(x.width) / x.height;
    CHECK(r <= 2.0);
    CHECK(r >= 0.5);
  }
  // The nearest bucket by log aspect ratio: square for square, the widest for a panorama.
  CHECK(b[data::nearest_bucket(b, 500, 500)] == data::Bucket{64, 64});
  CHECK(b[data::nearest_bucket(b, 1000, 100)] == b.back());
  CHECK(b[data::nearest_bucket(b, 100, 1000)] == b.front());
  CHECK(b.front().width < b.front().height);
  // fit_to_bucket: centre crop to the bucket's ratio, then resize; a flat image stays flat.
  io::RGBImage flat = xt::zeros<std::uint8_t>({std::size_t{30}, std::size_t{90}, std::size_t{3}});
  flat.fill(77);
  const auto out = data::fit_to_bucket(flat, b.back());
  CHECK(out.shape(1) == static_cast<std::size_t>(b.back().width));
  CHECK(out.shape(0) == static_cast<std::size_t>(b.back().height));
  CHECK(xt::amax(out)() == 77);
  CHECK(xt::amin(out)() == 77);
  // The crop keeps the centre: a left-right gradient cut to a square keeps its middle column.
  const auto g = gradient(90, 30);
  const auto sq = data::fit_to_bucket(g, {30, 30});
  CHECK(std::abs(int(sq(15, 15, 0)) - int(g(15, 45, 0))) <= 12);
  CHECK_THROWS_AS(data::aspect_buckets(60, 16), InputError);
  CHECK(data::aspect_buckets(32, 16) == std::vector<data::Bucket>{{32, 32}});  // 16x64 is ratio 4
}

TEST_CASE("the shapes world as a dataset: one category's examples, in order", "[data][finetune]") {
  const data::ShapesImages pos(32, 7, 12, data::Category::Position);
  CHECK(pos.size() == 12);
  std::set<std::string> captions;
  for (std::size_t i = 0; i < pos.size(); ++i) {
    const auto c = pos.caption(i);
    INFO(c);
    CHECK(data::category_of_example(pos.index(i)) == data::Category::Position);
    const bool relation = c.find(" above ") != std::string::npos || c.find(" below ") != std::string::npos ||
                          c.find(" left of ") != std::string::npos || c.find(" right of ") != std::string::npos;
    CHECK(relation);
    captions.insert(c);
    CHECK(pos.image(i).shape(0) == 32);
  }
  CHECK(captions.size() > 6);
  const data::ShapesImages all(32, 7, 6);
  CHECK(all.caption(4) == data::ShapesWorld(32, 7).example(4).caption);
}

}  // namespace t_image_folder
