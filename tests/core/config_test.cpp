// Config structs reflected with Boost.Hana: JSON round trip, defaults, and strict errors that name the key.
#include <catch2/catch.hpp>

#include "diffuse/core/config.hpp"
#include "test_util.hpp"

namespace t_config {

enum class Norm { None, RMS };

struct Inner {
  BOOST_HANA_DEFINE_STRUCT(Inner, (int, depth), (double, scale), (std::vector<int>, layers));
};

struct Outer {
  BOOST_HANA_DEFINE_STRUCT(Outer, (std::string, name), (Inner, block), (std::optional<double>, shift),
                           (bool, ema), (std::uint32_t, seed), (Norm, qk_norm),
                           (std::map<std::string, double>, weights), (std::array<int, 2>, patch));
};

}  // namespace t_config

DIFFUSE_ENUM_NAMES(t_config::Norm, {t_config::Norm::None, "none"}, {t_config::Norm::RMS, "rms"});

namespace t_config {

using Catch::Matchers::Contains;
using diffuse::InputError;

Outer sample() {
  Outer o{};
  o.name = "sd3";
  o.block = {24, 0.5, {7, 8, 9}};
  o.shift = 3.0;
  o.ema = true;
  o.seed = 42;
  o.qk_norm = Norm::RMS;
  o.weights = {{"a", 1.5}};
  o.patch = {2, 2};
  return o;
}

TEST_CASE("configs round-trip through JSON in declaration order", "[core][config]") {
  const Outer o = sample();
  const auto j = diffuse::config_to_json(o);
  CHECK(j.begin().key() == "name");  // declaration order, not alphabetical
  CHECK(j["qk_norm"] == "rms");
  const auto back = diffuse::config_from_json<Outer>(nlohmann::json::parse(j.dump()));
  CHECK(back.name == "sd3");
  CHECK(back.block.layers == std::vector<int>{7, 8, 9});
  CHECK(back.shift == 3.0);
  CHECK(back.qk_norm == Norm::RMS);
  CHECK(back.weights.at("a") == 1.5);
  CHECK(back.patch == std::array<int, 2>{2, 2});
  CHECK(diffuse::config_to_string(back) == diffuse::config_to_string(o));
}

TEST_CASE("missing keys keep defaults; null empties an optional", "[core][config]") {
  const auto c = diffuse::config_from_json<Outer>(nlohmann::json::parse(R"({"block":{"depth":3},"shift":null})"));
  CHECK(c.block.depth == 3);
  CHECK(c.name.empty());
  CHECK_FALSE(c.shift.has_value());
}

TEST_CASE("unknown keys and wrong types are errors naming the key path", "[core][config]") {
  auto bad = [](const char* text) { return diffuse::config_from_json<Outer>(nlohmann::json::parse(text)); };
  CHECK_THROWS_WITH(bad(R"({"block":{"detph":3}})"), Contains("block.detph: unknown key") && Contains("depth"));
  CHECK_THROWS_WITH(bad(R"({"block":{"depth":"24"}})"), Contains("block.depth: expected an integer"));
  CHECK_THROWS_WITH(bad(R"({"block":{"depth":2.5}})"), Contains("block.depth: expected an integer"));
  CHECK_THROWS_WITH(bad(R"({"block":{"layers":[1,"x"]}})"), Contains("block.layers[1]: expected an integer"));
  CHECK_THROWS_WITH(bad(R"({"seed":-1})"), Contains("seed: expected a non-negative integer"));
  CHECK_THROWS_WITH(bad(R"({"seed":5000000000})"), Contains("seed: expected an integer in range"));
  CHECK_THROWS_WITH(bad(R"({"ema":1})"), Contains("ema: expected true or false"));
  CHECK_THROWS_WITH(bad(R"({"qk_norm":"layer"})"), Contains("qk_norm: expected one of none, rms"));
  CHECK_THROWS_WITH(bad(R"({"patch":[2]})"), Contains("patch: expected an array of 2"));
  CHECK_THROWS_WITH(bad(R"({"weights":{"a":"x"}})"), Contains("weights.a: expected a number"));
  CHECK_THROWS_WITH(bad(R"([1])"), Contains("config: expected an object"));
}

TEST_CASE("load_config names the file", "[core][config]") {
  diffuse::test::TempDir dir;
  diffuse::test::write_bytes(dir / "c.json", R"({"name": 3})");
  CHECK_THROWS_WITH(diffuse::load_config<Outer>(dir / "c.json"), Contains("c.json: name: expected a string"));
  diffuse::test::write_bytes(dir / "d.json", R"({"name": )");
  CHECK_THROWS_WITH(diffuse::load_config<Outer>(dir / "d.json"), Contains("d.json: not valid JSON"));
  CHECK_THROWS_AS(diffuse::load_config<Outer>(dir / "missing.json"), InputError);
  diffuse::test::write_bytes(dir / "e.json", diffuse::config_to_string(sample()));
  CHECK(diffuse::load_config<Outer>(dir / "e.json").block.depth == 24);
}

}  // namespace t_config
