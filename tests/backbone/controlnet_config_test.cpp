// Reading an SD3 ControlNet's configuration from a file's tensors (torch-free): the released
// layout (blocks in the reference's names, embedders in diffusers'), the 8B and 2B forms, the
// stored control type, and the files that cannot drive a given MM-DiT. The test writes header-only
// fixtures (zeros) with the released key names at small sizes.
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "diffuse/backbone/controlnet_config.hpp"
#include "diffuse/io/safetensors_file.hpp"
#include "test_util.hpp"

namespace t_controlnet_config {

using namespace diffuse;
using Catch::Matchers::Contains;
using Shapes = std::vector<std::pair<std::string, std::vector<std::int64_t>>>;

// A ControlNet's keys as released: `layers` blocks of width d, pooled input `pooled`.
Shapes released(int layers, std::int64_t d, std::int64_t pooled, bool own_patch_embed) {
  Shapes s;
  auto linear = [&](const std::string& n, std::int64_t out, std::int64_t in) {
    s.push_back({n + ".weight", {out, in}});
    s.push_back({n + ".bias", {out}});
  };
  for (int i = 0; i < layers; ++i) {
    const auto b = "transformer_blocks." + std::to_string(i) + ".";
    linear(b + "adaLN_modulation.1", 6 * d, d);
    linear(b + "attn.qkv", 3 * d, d);
    linear(b + "attn.proj", d, d);
    linear(b + "mlp.fc1", 4 * d, d);
    linear(b + "mlp.fc2", d, 4 * d);
    linear("controlnet_blocks." + std::to_string(i), d, d);
  }
  s.push_back({"pos_embed_input.proj.weight", {d, 16, 2, 2}});
  s.push_back({"pos_embed_input.proj.bias", {d}});
  if (own_patch_embed) {
    s.push_back({"pos_embed.proj.weight", {d, 16, 2, 2}});
    s.push_back({"pos_embed.proj.bias", {d}});
  }
  linear("time_text_embed.timestep_embedder.linear_1", d, 256);
  linear("time_text_embed.timestep_embedder.linear_2", d, d);
  linear("time_text_embed.text_embedder.linear_1", d, pooled);
  linear("time_text_embed.text_embedder.linear_2", d, d);
  return s;
}

// Writes the header and leaves the data zeros of a sparse file (the SD3.5-large shapes are GBs):
// control_type, when given, first (its 4 bytes written), then F16 tensors.
std::string write(const std::filesystem::path& path, const Shapes& shapes, std::optional<std::int32_t> control_type = {}) {
  std::string header = "{";
  std::int64_t offset = 0;
  auto entry = [&](const std::string& name, const char* dtype, const std::vector<std::int64_t>& shape, std::int64_t bytes) {
    std::string dims;
    for (auto v : shape) dims += (dims.empty() ? "" : ",") + std::to_string(v);
    header += (header.size() > 1 ? "," : "") + std::string("\"") + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[" + dims +
              "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
    offset += bytes;
  };
  if (control_type) entry("control_type", "I32", {1}, 4);
  for (const auto& [name, shape] : shapes) {
    std::int64_t n = 1;
    for (auto v : shape) n *= v;
    entry(name, "F16", shape, 2 * n);
  }
  header += "}";
  {
    std::ofstream out(path, std::ios::binary);
    const std::uint64_t len = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
    out << header;
    if (control_type)
      for (int i = 0; i < 4; ++i) out.put(static_cast<char>((static_cast<std::uint32_t>(*control_type) >> (8 * i)) & 0xff));
  }
  std::filesystem::resize_file(path, 8 + header.size() + static_cast<std::uint64_t>(offset));
  return path.string();
}

backbone::MMDiTConfig base(int depth) {
  auto c = backbone::MMDiTConfig::scaling(depth);  // hidden 64 depth
  c.adm_in = 256;
  return c;
}

TEST_CASE("ControlNet config: the 8B and 2B forms, block count, interval and control type from the tensors", "[backbone][controlnet]") {
  diffuse::test::TempDir dir;
  // 8B form: pooled input = the MM-DiT's pooled width; 3 blocks for 6 joint blocks; canny.
  const auto f8 = write(dir.path() / "cn8.safetensors", released(3, 384, 256, false), 1);
  auto c = backbone::detect_controlnet_config(io::SafetensorsFile(f8), base(6));
  CHECK(c.form == backbone::ControlNetForm::PooledText8B);
  CHECK(c.layers == 3);
  CHECK(c.hidden == 384);
  CHECK(c.heads == 6);
  CHECK(c.mlp_hidden == 4 * 384);
  CHECK(c.interval == 2);
  CHECK(c.control_type == 1);
  CHECK(c.control_type_stored);
  CHECK(std::string(backbone::control_type_name(c.control_type)) == "canny");
  CHECK_FALSE(c.own_patch_embed);
  // 2B form: pooled input = the MM-DiT's hidden width (its y_embedder's output); no control_type: 0.
  const auto f2 = write(dir.path() / "cn2.safetensors", released(2, 384, 384, true));
  c = backbone::detect_controlnet_config(io::SafetensorsFile(f2), base(6));
  CHECK(c.form == backbone::ControlNetForm::EmbeddedText2B);
  CHECK(c.interval == 3);
  CHECK(c.control_type == 0);
  CHECK_FALSE(c.control_type_stored);
  CHECK(c.own_patch_embed);
  // The released SD3.5-large shape: 19 blocks for 38 joint blocks, pooled 2048.
  auto large = backbone::MMDiTConfig::sd35_large();
  const auto fl = write(dir.path() / "large.safetensors", released(19, 2432, 2048, false), 2);
  c = backbone::detect_controlnet_config(io::SafetensorsFile(fl), large);
  CHECK(c.layers == 19);
  CHECK(c.interval == 2);
  CHECK(c.heads == 38);
  CHECK(std::string(backbone::control_type_name(c.control_type)) == "depth");
}

TEST_CASE("ControlNet config: files that are no ControlNet or are for another model say why", "[backbone][controlnet]") {
  diffuse::test::TempDir dir;
  const auto f8 = write(dir.path() / "cn8.safetensors", released(3, 384, 256, false));
  // Another model's width (SD3.5-medium-like depth 24: 1536).
  CHECK_THROWS_WITH(backbone::detect_controlnet_config(io::SafetensorsFile(f8), base(24)),
                    Contains("a ControlNet for another model") && Contains("384") && Contains("1536"));
  // Pooled input neither the pooled text nor its embedding.
  const auto odd = write(dir.path() / "odd.safetensors", released(3, 384, 100, false));
  CHECK_THROWS_WITH(backbone::detect_controlnet_config(io::SafetensorsFile(odd), base(6)), Contains("pooled-text input is 100"));
  // 4 blocks cannot feed 6 joint blocks by the reference's rule (block 5 would take output 5).
  const auto four = write(dir.path() / "four.safetensors", released(4, 384, 256, false));
  CHECK_THROWS_WITH(backbone::detect_controlnet_config(io::SafetensorsFile(four), base(6)), Contains("4 blocks cannot feed 6"));
  // 2B form without its own patch embedding.
  const auto no_embed = write(dir.path() / "noembed.safetensors", released(2, 384, 384, false));
  CHECK_THROWS_WITH(backbone::detect_controlnet_config(io::SafetensorsFile(no_embed), base(6)), Contains("pos_embed.proj.weight"));
  // Not a ControlNet at all.
  const auto other = write(dir.path() / "other.safetensors", {{"x_embedder.proj.weight", {384, 16, 2, 2}}});
  CHECK_THROWS_WITH(backbone::detect_controlnet_config(io::SafetensorsFile(other), base(6)), Contains("not an SD3 ControlNet"));
}

}  // namespace t_controlnet_config
