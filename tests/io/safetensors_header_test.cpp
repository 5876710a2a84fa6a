// The torch-free safetensors parser: every malformed case named in the format's rules is an
// InputError naming the file (and the tensor where one is involved); valid files round-trip.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>

#include "diffuse/io/safetensors_file.hpp"
#include "test_util.hpp"

namespace t_safetensors_header {

using namespace diffuse;
using namespace diffuse::io;
using Catch::Matchers::Contains;

Header parse(const std::string& header, const std::string& data) {
  const std::string bytes = test::safetensors_bytes(header, data);
  return parse_header({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "m.safetensors");
}

const std::string eight(8, 'x');

TEST_CASE("a valid header parses with metadata, order and offsets", "[io][safetensors]") {
  const auto h = parse(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("a":{"dtype":"U8","shape":[2,0],"data_offsets":[8,8]}})",
                       eight);
  REQUIRE(h.tensors.size() == 2);
  CHECK(h.tensors[0].name == "b");  // file order, not sorted
  CHECK(h.tensors[0].numel() == 2);
  CHECK(h.tensors[1].numel() == 0);
  CHECK(h.metadata.at("format") == "pt");
  CHECK(h.data_size == 8);
  CHECK(h.find("a") != nullptr);
  CHECK(h.find("c") == nullptr);
}

TEST_CASE("malformed safetensors files are InputErrors naming file and tensor", "[io][safetensors]") {
  SECTION("truncated before the length") {
    const std::string bytes = "abc";
    CHECK_THROWS_WITH(parse_header({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "m.safetensors"),
                      Contains("m.safetensors") && Contains("too short"));
  }
  SECTION("header length larger than the file") {
    std::string bytes = test::safetensors_bytes("{}", "");
    bytes[0] = 100;  // claims 100 bytes of header, 2 present
    CHECK_THROWS_WITH(parse_header({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "m.safetensors"),
                      Contains("larger than") && Contains("truncated"));
  }
  SECTION("header length above 100 MB") {
    std::string bytes = test::safetensors_bytes("{}", "");
    const std::uint64_t n = 200'000'000;
    std::memcpy(bytes.data(), &n, 8);
    CHECK_THROWS_WITH(parse_header({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "m.safetensors"),
                      Contains("100 MB"));
  }
  SECTION("header length near 2^64 does not wrap") {
    std::string bytes = test::safetensors_bytes("{}", "");
    const std::uint64_t n = ~std::uint64_t{0} - 3;
    std::memcpy(bytes.data(), &n, 8);
    CHECK_THROWS_AS(parse_header({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "m"), InputError);
  }
  SECTION("invalid JSON") {
    CHECK_THROWS_WITH(parse(R"({"a":{"dtype":"F32",)", ""), Contains("m.safetensors") && Contains("not valid JSON"));
  }
  SECTION("invalid UTF-8 in a name") {
    CHECK_THROWS_AS(parse("{\"\xff\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", "1234"), InputError);
  }
  SECTION("header that is not an object") {
    CHECK_THROWS_WITH(parse("[1,2]", ""), Contains("must be a JSON object"));
  }
  SECTION("unknown dtype") {
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "x"),
                      Contains("tensor 'w'") && Contains("unknown dtype 'F8_E4M3'"));
  }
  SECTION("shape and dtype not matching the byte range") {
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
                      Contains("tensor 'w'") && Contains("need 12 bytes") && Contains("cover 8"));
  }
  SECTION("offsets beyond the data") {
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight),
                      Contains("tensor 'w'") && Contains("beyond the data buffer"));
  }
  SECTION("begin after end") {
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})", eight),
                      Contains("tensor 'w'") && Contains("begin after end"));
  }
  SECTION("overlapping ranges") {
    CHECK_THROWS_WITH(parse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            eight),
                      Contains("overlaps tensor 'a'"));
  }
  SECTION("non-contiguous ranges (a hole)") {
    CHECK_THROWS_WITH(parse(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                            eight),
                      Contains("tensor 'b'") && Contains("non-contiguous"));
  }
  SECTION("data not covered at the end") {
    CHECK_THROWS_WITH(parse(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight),
                      Contains("cover 4 bytes") && Contains("has 8"));
  }
  SECTION("duplicate tensor names") {
    CHECK_THROWS_WITH(parse(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            eight),
                      Contains("duplicate key 'a'"));
  }
  SECTION("duplicate field inside an entry") {
    CHECK_THROWS_WITH(parse(R"({"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "1234"),
                      Contains("duplicate key 'dtype'"));
  }
  SECTION("negative dimension") {
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "1234"),
                      Contains("tensor 'w'") && Contains("not a non-negative integer"));
  }
  SECTION("fractional dimension") {
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "1234"),
                      Contains("not a non-negative integer"));
  }
  SECTION("overflowing dimensions") {
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "1234"),
                      Contains("tensor 'w'") && Contains("overflows"));
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}})", "1234"),
                      Contains("overflows"));
    CHECK_THROWS_AS(parse(R"({"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}})", "1234"),
                    InputError);
  }
  SECTION("missing and unknown fields") {
    CHECK_THROWS_WITH(parse(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "1234"), Contains("missing field 'dtype'"));
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "1234"), Contains("missing field 'shape'"));
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F32","shape":[1]}})", "1234"), Contains("missing field 'data_offsets'"));
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", "1234"),
                      Contains("unknown field 'x'"));
    CHECK_THROWS_WITH(parse(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "1234"),
                      Contains("[begin, end]"));
    CHECK_THROWS_WITH(parse(R"({"w":7})", ""), Contains("entry must be a JSON object"));
  }
  SECTION("metadata values must be strings") {
    CHECK_THROWS_WITH(parse(R"({"__metadata__":{"step":3}})", ""), Contains("'__metadata__' value of 'step'"));
  }
}

TEST_CASE("make_header lays tensors out back to back and aligns the data", "[io][safetensors]") {
  std::vector<TensorInfo> infos(3);
  infos[0].name = "x"; infos[0].dtype = Dtype::BF16; infos[0].shape = {3};
  infos[1].name = "y"; infos[1].dtype = Dtype::I64; infos[1].shape = {2, 1};
  infos[2].name = "z"; infos[2].dtype = Dtype::BOOL; infos[2].shape = {0};
  const std::string header = make_header(infos, {{"k", "v"}});
  CHECK(header.size() % 8 == 0);
  const std::string data(6 + 16, '\1');
  const std::string bytes = header + data;
  const auto h = parse_header({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "made");
  REQUIRE(h.tensors.size() == 3);
  CHECK(h.tensors[1].begin == 6);
  CHECK(h.tensors[1].end == 22);
  CHECK(h.data_start % 8 == 0);
  CHECK(h.metadata.at("k") == "v");

  std::vector<TensorInfo> dup(2);
  dup[0].name = dup[1].name = "a";
  CHECK_THROWS_WITH(make_header(dup, {}), Contains("'a' given twice"));
}

TEST_CASE("SafetensorsFile maps a file lazily and write_safetensors is atomic", "[io][safetensors]") {
  test::TempDir dir;
  const auto path = dir / "w.safetensors";
  const float values[3] = {1.f, -2.f, 0.5f};
  const std::int32_t ints[2] = {7, -9};
  write_safetensors(path,
                    {{"f", Dtype::F32, {3}, {reinterpret_cast<const std::byte*>(values), sizeof values}},
                     {"i", Dtype::I32, {1, 2}, {reinterpret_cast<const std::byte*>(ints), sizeof ints}}},
                    {{"source", "test"}});
  SafetensorsFile f(path.string());
  REQUIRE(f.tensors().size() == 2);
  CHECK(f.metadata().at("source") == "test");
  const auto b = f.bytes(f.info("f"));
  REQUIRE(b.size() == sizeof values);
  CHECK(std::memcmp(b.data(), values, sizeof values) == 0);
  CHECK_THROWS_WITH(f.info("nope"), Contains("no tensor named 'nope'") && Contains("w.safetensors"));

  SECTION("a failed write leaves the old file and no temporary behind") {
    const auto before = test::read_text(path);
    CHECK_THROWS_AS(write_safetensors(path, {{"f", Dtype::F32, {4}, {reinterpret_cast<const std::byte*>(values), 12}}}),
                    InputError);
    CHECK(test::read_text(path) == before);
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
    CHECK(files == 1);
  }
  SECTION("a missing file and a directory are clear errors") {
    CHECK_THROWS_WITH(SafetensorsFile((dir / "none.safetensors").string()), Contains("none.safetensors") && Contains("cannot open"));
    CHECK_THROWS_WITH(SafetensorsFile(dir.path().string()), Contains("not a regular file"));
  }
  SECTION("truncating the data is detected") {
    auto bytes = test::read_text(path);
    test::write_bytes(path, bytes.substr(0, bytes.size() - 3));
    CHECK_THROWS_WITH(SafetensorsFile(path.string()), Contains("w.safetensors") && Contains("tensor 'i'"));
  }
  SECTION("read copies a tensor's bytes through the descriptor; a file cut while open is named, not a crash") {
    std::int32_t got[2] = {0, 0};
    f.read(f.info("i"), reinterpret_cast<std::byte*>(got));
    CHECK(got[0] == 7);
    CHECK(got[1] == -9);
    const auto size = f.mapping()->size();
    std::byte one{};
    CHECK_THROWS_WITH(f.mapping()->read(size, {&one, 1}), Contains("past the end"));
    std::filesystem::resize_file(path, size - 4);  // the last int32 of "i" is gone
    got[1] = 0;
    CHECK_THROWS_WITH(f.read(f.info("i"), reinterpret_cast<std::byte*>(got)),
                      Contains("w.safetensors") && Contains("ends at byte " + std::to_string(size - 4)));
  }
}

}  // namespace t_safetensors_header
