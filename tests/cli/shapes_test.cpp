// `diffuse shapes`: render a caption, write a dataset, evaluate it (ground truth scores 1.0,
// wrong captions score 0), and bad input exits with code 2.
#include <catch2/catch.hpp>

#include <fstream>

#include <nlohmann/json.hpp>

#include "diffuse/eval/shapes_eval.hpp"
#include "test_util.hpp"

namespace t_cli_shapes {

using namespace diffuse;
using Catch::Matchers::Contains;

TEST_CASE("diffuse shapes render, dataset and eval", "[cli][shapes]") {
  test::TempDir dir;
  const auto img = (dir / "r.png").string();
  REQUIRE(test::run_cli("shapes render --prompt 'a red circle above a blue square' --seed 3 --out " + img).exit_code == 0);
  CHECK(eval::evaluate_image(io::read_png(img), {"a red circle above a blue square", data::Category::Position, false}));
  CHECK_THAT(io::read_png_text(img).at(0).second, Contains("a red circle above a blue square"));

  const auto ds = (dir / "ds").string();
  REQUIRE(test::run_cli("shapes dataset --count 36 --out " + ds).exit_code == 0);
  const auto ev = test::run_cli("shapes eval --images " + ds);
  REQUIRE(ev.exit_code == 0);
  CHECK_THAT(ev.out, Contains("overall         1.000"));
  std::ifstream j(ds + "/shapes_eval.json");
  CHECK(nlohmann::json::parse(j)["categories"]["counting"]["total"] == 6);

  // The same images judged against other captions fail.
  std::ifstream in(ds + "/captions.jsonl");
  std::string lines, line;
  while (std::getline(in, line)) {
    auto e = nlohmann::json::parse(line);
    e["caption"] = e["caption"].get<std::string>().find("red") != std::string::npos ? "four blue squares" : "four red squares";
    e["category"] = "counting";
    lines += e.dump() + "\n";
  }
  test::write_bytes(ds + "/captions.jsonl", lines);
  CHECK_THAT(test::run_cli("shapes eval --images " + ds).out, Contains("overall         0.000"));

  CHECK(test::run_cli("shapes render --prompt 'a pink circle' --out " + img).exit_code == 2);
  CHECK(test::run_cli("shapes eval --images " + (dir / "none").string()).exit_code == 2);
  CHECK(test::run_cli("shapes dataset --count 0 --out " + ds).exit_code == 2);
  CHECK(test::run_cli("shapes dataset --count 3 --category sizes --out " + ds).exit_code == 2);

  // One category, with the image folder's metadata.jsonl (file_name, text) beside captions.jsonl.
  const auto pos = (dir / "pos").string();
  REQUIRE(test::run_cli("shapes dataset --count 12 --category position --seed 5 --out " + pos).exit_code == 0);
  const auto pos_eval = test::run_cli("shapes eval --images " + pos);
  CHECK_THAT(pos_eval.out, Contains("position        1.000"));
  std::ifstream cj(pos + "/captions.jsonl"), mj(pos + "/metadata.jsonl");
  int rows = 0;
  for (std::string c, m; std::getline(cj, c) && std::getline(mj, m); ++rows) {
    const auto a = nlohmann::json::parse(c), b = nlohmann::json::parse(m);
    CHECK(a["category"] == "position");
    CHECK(b["file_name"] == a["file"]);
    CHECK(b["text"] == a["caption"]);
  }
  CHECK(rows == 12);
  test::write_bytes(dir / "bad.json", "[{\"prompt\": \"a red circle\", \"category\": \"sizes\"}]");
  CHECK(test::run_cli("shapes eval --images " + ds + " --prompts " + (dir / "bad.json").string()).exit_code == 2);
}

}  // namespace t_cli_shapes
