// The `diffuse` program: --help/--version, and `inspect` on valid and malformed files
// (malformed input: one line on stderr, exit code 2, never a crash).
#include <catch2/catch.hpp>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "diffuse/io/safetensors_file.hpp"
#include "test_util.hpp"

namespace t_cli_inspect {

using namespace diffuse;
using Catch::Matchers::Contains;

std::size_t lines(const std::string& s) { return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n')); }

TEST_CASE("diffuse --help, --version and usage errors", "[cli]") {
  const auto help = test::run_cli("--help");
  CHECK(help.exit_code == 0);
  CHECK_THAT(help.out, Contains("inspect"));
  const auto version = test::run_cli("--version");
  CHECK(version.exit_code == 0);
  CHECK_THAT(version.out, Contains("diffuse 0."));
  CHECK(test::run_cli("").exit_code == 2);                  // a subcommand is required
  CHECK(test::run_cli("frobnicate").exit_code == 2);        // unknown subcommand
  CHECK(test::run_cli("inspect").exit_code == 2);           // missing FILE
  CHECK(test::run_cli("inspect --bogus x").exit_code == 2);  // unknown option
  CHECK(test::run_cli("inspect --help").exit_code == 0);
}

TEST_CASE("diffuse inspect lists tensors, parameters, metadata and the family", "[cli]") {
  test::TempDir dir;
  const auto path = dir / "tiny.safetensors";
  std::vector<float> w(128 * 16 * 2 * 2, 0.f), fl(64 * 128, 0.f);
  io::write_safetensors(path,
                        {{"x_embedder.proj.weight", io::Dtype::F32, {128, 16, 2, 2},
                          {reinterpret_cast<const std::byte*>(w.data()), w.size() * 4}},
                         {"final_layer.linear.weight", io::Dtype::F32, {64, 128},
                          {reinterpret_cast<const std::byte*>(fl.data()), fl.size() * 4}}},
                        {{"note", "made by a test"}});
  const auto text = test::run_cli("inspect " + path.string());
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.out, Contains("x_embedder.proj.weight") && Contains("[128, 16, 2, 2]") && Contains("16384") &&
                           Contains("note: made by a test") && Contains("MM-DiT: custom"));

  const auto js = test::run_cli("inspect --json " + path.string());
  REQUIRE(js.exit_code == 0);
  const auto j = nlohmann::json::parse(js.out);
  CHECK(j["parameters"] == 128 * 16 * 4 + 64 * 128);
  CHECK(j["tensor_count"] == 2);
  CHECK(j["tensors"][1]["name"] == "final_layer.linear.weight");
  CHECK(j["components"][0]["kind"] == "MM-DiT");
  CHECK(j["components"][0]["sizes"]["hidden"] == 128);

  const auto summary = test::run_cli("inspect --summary " + path.string());
  CHECK(summary.exit_code == 0);
  CHECK_THAT(summary.out, !Contains("[128, 16, 2, 2]"));
}

TEST_CASE("diffuse inspect rejects malformed files with one line and exit code 2", "[cli]") {
  test::TempDir dir;
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"short", "abc"},
      {"bad_length", std::string("\x64\x00\x00\x00\x00\x00\x00\x00{}", 10)},
      {"huge_header", std::string("\x00\x00\x00\x10\x00\x00\x00\x00{}", 10)},
      {"bad_json", test::safetensors_bytes("{\"w\":", "")},
      {"bad_dtype", test::safetensors_bytes(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", "12345678")},
      {"bad_size", test::safetensors_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678")},
      {"truncated_data", test::safetensors_bytes("{" + ok_entry + "}", "1234")},
      {"duplicate", test::safetensors_bytes("{" + ok_entry + "," + ok_entry + "}", "12345678")},
      {"negative", test::safetensors_bytes(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "12345678")},
      {"overflow", test::safetensors_bytes(R"({"w":{"dtype":"F32","shape":[9223372036854775807,4],"data_offsets":[0,8]}})",
                                           "12345678")},
      {"overlap", test::safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                          "12345678")},
      {"hole", test::safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "12345678")},
      {"empty", ""},
  };
  for (const auto& [name, bytes] : cases) {
    DYNAMIC_SECTION(name) {
      const auto path = dir / (name + ".safetensors");
      test::write_bytes(path, bytes);
      const auto r = test::run_cli("inspect " + path.string());
      CHECK(r.exit_code == 2);
      CHECK(lines(r.err) == 1);
      CHECK_THAT(r.err, Contains("diffuse: error:") && Contains(name + ".safetensors"));
      CHECK(r.out.empty());
    }
  }
  const auto missing = test::run_cli("inspect " + (dir / "absent.safetensors").string());
  CHECK(missing.exit_code == 2);
  CHECK_THAT(missing.err, Contains("absent.safetensors") && Contains("cannot open"));
}

#ifdef DIFFUSE_TESTDATA_DIR
// Parity data (read in place): ../shared/testdata/sd3ref/*.safetensors, produced by the official
// SD3.5 reference. Every file must inspect cleanly and the weights files must be recognised.
TEST_CASE("diffuse inspect recognises the reference test vectors", "[cli][parity]") {
  const std::string root = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
  struct Expect {
    const char* file;
    const char* kind;  // empty: no component expected
    const char* size_key;
    int size_value;
  };
  const Expect cases[] = {
      {"mmdit_a.weights.safetensors", "MM-DiT", "depth", 2},
      {"mmdit_b.weights.safetensors", "MM-DiT", "qk_norm", 1},
      {"mmdit_c.weights.safetensors", "MM-DiT", "x_self_attn_layers", 1},
      {"vae_a.weights.safetensors", "KL autoencoder", "latent_channels", 16},
      {"clip_a.weights.safetensors", "CLIP text model", "layers", 3},
      {"clip_b.weights.safetensors", "CLIP text model", "text_projection", 1},
      {"t5_a.weights.safetensors", "T5 encoder", "d_model", 64},
      {"mmdit_a.io.safetensors", "", "", 0},
      {"sampler_b.io.safetensors", "", "", 0},
      {"vae_a.io.safetensors", "", "", 0},
      {"t5_a.io.safetensors", "", "", 0},
  };
  for (const auto& e : cases) {
    DYNAMIC_SECTION(e.file) {
      const auto r = test::run_cli("inspect --json " + root + e.file);
      REQUIRE(r.exit_code == 0);
      const auto j = nlohmann::json::parse(r.out);
      CHECK(j["tensor_count"].get<int>() > 0);
      CHECK(j["metadata"].contains("case"));
      if (std::string(e.kind).empty()) {
        CHECK(j["components"].empty());
      } else {
        REQUIRE(j["components"].size() == 1);
        CHECK(j["components"][0]["kind"] == e.kind);
        CHECK(j["components"][0]["sizes"][e.size_key] == e.size_value);
      }
    }
  }
}
#endif

}  // namespace t_cli_inspect
