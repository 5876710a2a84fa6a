// `diffuse timesteps`: seeded samples, density tables, the plot, and bad specs (exit code 2).
#include <catch2/catch.hpp>

#include <sstream>

#include "diffuse/io/png.hpp"
#include "test_util.hpp"

namespace t_cli_timesteps {

using namespace diffuse;
using Catch::Matchers::Contains;

std::vector<double> numbers(const std::string& text) {
  std::istringstream in(text);
  std::vector<double> v;
  double x;
  while (in >> x) v.push_back(x);
  return v;
}

TEST_CASE("diffuse timesteps sample prints seeded t in (0, 1)", "[cli][timesteps]") {
  const auto a = test::run_cli("timesteps sample --dist 'logit_normal(0,1)' --count 2000 --seed 9");
  REQUIRE(a.exit_code == 0);
  const auto v = numbers(a.out);
  REQUIRE(v.size() == 2000);
  double mean = 0;
  for (double t : v) {
    CHECK(t > 0);
    CHECK(t < 1);
    mean += t / v.size();
  }
  CHECK(mean == Approx(0.5).margin(0.02));  // symmetric for m = 0
  CHECK(test::run_cli("timesteps sample --dist 'logit_normal(0,1)' --count 2000 --seed 9").out == a.out);
  CHECK(test::run_cli("timesteps sample --dist 'logit_normal(0,1)' --count 2000 --seed 10").out != a.out);
  // The shift moves mass towards noise: the mean grows.
  const auto s = numbers(test::run_cli("timesteps sample --dist 'logit_normal(0,1)' --count 2000 --seed 9 --shift 3").out);
  double shifted = 0;
  for (double t : s) shifted += t / s.size();
  CHECK(shifted > mean + 0.1);
}

TEST_CASE("diffuse timesteps density prints t and pi(t)", "[cli][timesteps]") {
  const auto r = test::run_cli("timesteps density --dist cosmap --points 3");
  REQUIRE(r.exit_code == 0);
  const auto v = numbers(r.out);
  REQUIRE(v.size() == 6);
  CHECK(v[2] == Approx(0.5));
  CHECK(v[3] == Approx(2.0 / (3.14159265358979 - 3.14159265358979 / 2)));  // 2 / (pi - 2 pi t + 2 pi t^2) at 1/2
}

TEST_CASE("diffuse timesteps plot writes a PNG", "[cli][timesteps]") {
  test::TempDir dir;
  const auto r = test::run_cli("timesteps plot --out " + (dir / "p.png").string());
  REQUIRE(r.exit_code == 0);
  const auto img = io::read_png(dir / "p.png");
  CHECK(img.shape()[1] > img.shape()[0]);
  const auto text = io::read_png_text(dir / "p.png");
  CHECK(!text.empty());
}

TEST_CASE("bad timestep specifications exit with code 2", "[cli][timesteps]") {
  for (const char* bad : {"'lognormal(0,1)'", "'logit_normal(0)'", "'logit_normal(0,-1)'", "'mode(2)'", "'mode(x)'",
                          "'cosmap(1)'", "'uniform('"}) {
    DYNAMIC_SECTION(bad) {
      const auto r = test::run_cli(std::string("timesteps sample --count 1 --dist ") + bad);
      CHECK(r.exit_code == 2);
      CHECK_THAT(r.err, Contains("diffuse: error: timesteps") || Contains("mode(s)"));
    }
  }
  CHECK(test::run_cli("timesteps sample --count 1 --shift 0").exit_code == 2);
  CHECK(test::run_cli("timesteps sample --count -3").exit_code == 2);
  CHECK(test::run_cli("timesteps plot").exit_code == 2);  // --out is required
}

}  // namespace t_cli_timesteps
