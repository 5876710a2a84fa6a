// safetensors <-> torch::Tensor: every dtype round-trips bit-exactly, loading is zero-copy and
// lazy, conversions on request, and views keep the mapping alive.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "diffuse/io/safetensors.hpp"
#include "test_util.hpp"

namespace t_safetensors_torch {

using namespace diffuse;
using namespace diffuse::io;
using Catch::Matchers::Contains;

torch::Tensor example(Dtype d, torch::Generator& gen) {
  const auto st = to_scalar_type(d);
  auto base = torch::randn({3, 5}, gen, torch::kFloat64) * 50;
  if (d == Dtype::BOOL) return base > 0;
  if (d == Dtype::U8) return base.abs().to(st);
  return base.to(st);
}

TEST_CASE("every dtype round-trips through a file bit-exactly", "[io][safetensors][torch]") {
  test::TempDir dir;
  auto gen = at::detail::createCPUGenerator(1234);
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (Dtype d : all_dtypes) tensors.emplace_back(std::string(dtype_name(d)), example(d, gen));
  tensors.emplace_back("scalar", torch::tensor(2.5));
  tensors.emplace_back("empty", torch::zeros({0, 4}));
  // A non-contiguous view is written in logical order.
  tensors.emplace_back("transposed", torch::arange(6, torch::kFloat32).reshape({2, 3}).t());
  save_safetensors(dir / "all.safetensors", tensors, {{"purpose", "round trip"}});

  SafetensorsFile file((dir / "all.safetensors").string());
  CHECK(file.metadata().at("purpose") == "round trip");
  REQUIRE(file.tensors().size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    DYNAMIC_SECTION(name) {
      const auto back = load_tensor(file, name);
      CHECK(back.scalar_type() == t.scalar_type());
      CHECK(back.sizes() == t.sizes());
      CHECK(torch::equal(back, t.contiguous()));
    }
  }
}

TEST_CASE("loading is zero-copy and the view outlives the file object", "[io][safetensors][torch]") {
  test::TempDir dir;
  const auto path = dir / "w.safetensors";
  save_safetensors(path, {{"a", torch::arange(4, torch::kFloat32)}, {"b", torch::ones({2, 2}, torch::kBFloat16)}});
  const auto before = test::read_text(path);
  torch::Tensor a;
  {
    SafetensorsFile file(path.string());
    a = load_tensor(file, "a");
    const auto* base = reinterpret_cast<const char*>(file.mapping()->bytes().data());
    const auto* p = static_cast<const char*>(a.data_ptr());
    CHECK(p >= base);
    CHECK(p < base + file.mapping()->size());  // a view into the mapping, not a copy
  }
  CHECK(a[3].item<float>() == 3.f);  // the mapping is still alive
  a.mul_(2);                         // copy-on-write: memory changes, the file does not
  CHECK(a[3].item<float>() == 6.f);
  CHECK(test::read_text(path) == before);
}

TEST_CASE("requested dtypes convert on load", "[io][safetensors][torch]") {
  test::TempDir dir;
  const auto path = dir / "w.safetensors";
  const auto x = torch::tensor({1.0, -0.5, 3.25}, torch::kFloat32);
  save_safetensors(path, {{"x", x}});
  LoadOptions bf16;
  bf16.dtype = torch::kBFloat16;
  const auto dict = load_safetensors(path.string(), bf16);
  CHECK(dict["x"].scalar_type() == torch::kBFloat16);
  CHECK(torch::equal(dict["x"].to(torch::kFloat32), x));  // exactly representable values
  LoadOptions f64;
  f64.dtype = torch::kFloat64;
  CHECK(load_tensor(SafetensorsFile(path.string()), "x", f64).scalar_type() == torch::kFloat64);
}

TEST_CASE("a converted tensor's source pages are given back; the file's bytes and the views stay right", "[io][safetensors][torch]") {
  test::TempDir dir;
  const auto path = dir / "w.safetensors";
  const auto a = torch::arange(100000, torch::kFloat32) * 0.5, b = torch::arange(7, torch::kFloat32);  // a spans many pages
  save_safetensors(path, {{"a", a}, {"b", b}});
  SafetensorsFile file(path.string());
  auto view_b = load_tensor(file, "b");
  view_b.mul_(2);  // a zero-copy view written in place (copy-on-write page next to a's last page)
  LoadOptions f64;
  f64.dtype = torch::kFloat64;
  const auto converted = load_tensor(file, "a", f64);  // releases a's whole pages in the mapping
  CHECK(torch::equal(converted, a.to(torch::kFloat64)));
  CHECK(torch::equal(load_tensor(file, "a"), a));  // read again from the file after the release
  CHECK(torch::equal(view_b, b * 2));              // the written neighbour keeps its write
  CHECK(torch::equal(load_tensor(file, "b", f64), (b * 2).to(torch::kFloat64)));  // the same bytes as the view
}

TEST_CASE("in_memory reads a tensor into memory of its own, in every dtype and for large ones too", "[io][safetensors][torch]") {
  test::TempDir dir;
  const auto path = dir / "w.safetensors";
  const auto big = torch::arange(3 << 20, torch::kFloat32).reshape({3, 1 << 20});  // 12 MiB: the huge-page allocation
  save_safetensors(path, {{"big", big}, {"h", torch::arange(6, torch::kFloat16)}, {"none", torch::zeros({0, 3})}});
  SafetensorsFile file(path.string());
  const auto* base = reinterpret_cast<const char*>(file.mapping()->bytes().data());
  const auto outside = [&](const torch::Tensor& t) {
    const auto* p = static_cast<const char*>(t.data_ptr());
    return p < base || p >= base + file.mapping()->size();
  };
  LoadOptions mem;
  mem.in_memory = true;
  const auto b = load_tensor(file, "big", mem);
  CHECK(outside(b));
  CHECK(torch::equal(b, big));
  CHECK(b.is_contiguous());
  const auto h = load_tensor(file, "h", mem);
  CHECK(outside(h));
  CHECK(h.scalar_type() == torch::kFloat16);
  CHECK(torch::equal(h, torch::arange(6, torch::kFloat16)));
  CHECK(load_tensor(file, "none", mem).sizes() == torch::IntArrayRef{0, 3});
  mem.dtype = torch::kBFloat16;  // a conversion is a copy either way
  const auto hb = load_tensor(file, "h", mem);
  CHECK(hb.scalar_type() == torch::kBFloat16);
  CHECK(torch::equal(hb.to(torch::kFloat32), torch::arange(6, torch::kFloat32)));
  auto copy = load_tensor(file, "big", {});
  copy.mul_(0);  // writes a zero-copy view; the in-memory tensor and the file keep their values
  CHECK(torch::equal(b, big));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);  // cut while open
  mem.dtype.reset();
  CHECK_THROWS_WITH(load_tensor(file, "big", mem), Contains("w.safetensors") && Contains("ends at byte"));
}

TEST_CASE("saving rejects what safetensors cannot hold", "[io][safetensors][torch]") {
  test::TempDir dir;
  CHECK_THROWS_WITH(save_safetensors(dir / "c.safetensors", {{"z", torch::zeros({2}, torch::kComplexFloat)}}),
                    Contains("no safetensors equivalent"));
  CHECK_THROWS_WITH(save_safetensors(dir / "u.safetensors", {{"u", torch::Tensor()}}), Contains("'u' is undefined"));
  CHECK_FALSE(std::filesystem::exists(dir / "c.safetensors"));
}

}  // namespace t_safetensors_torch
