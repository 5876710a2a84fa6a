// `diffuse forward` on MM-DiT weights: the written `out` equals the library's forward; bad inputs
// exit with code 2. With the parity data: the reference's mmdit_a output (reads
// ../shared/testdata/sd3ref/mmdit_a.{weights,io}.safetensors).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "diffuse/io/mmdit_checkpoint.hpp"
#include "test_util.hpp"

namespace t_cli_forward {

using namespace diffuse;
using Catch::Matchers::Contains;

TEST_CASE("diffuse forward runs an MM-DiT checkpoint on named inputs", "[cli][mmdit]") {
  auto c = backbone::MMDiTConfig::scaling(2);
  c.adm_in = 8;
  c.context_in = 16;
  c.pos_embed_max_size = 6;
  torch::manual_seed(2);
  backbone::MMDiT model(c);
  test::TempDir dir;
  io::save_mmdit(dir / "w.safetensors", model, io::KeyLayout::Diffusers, "transformer.");
  const auto x = torch::randn({1, 16, 4, 6}), sigma = torch::tensor({0.3f});
  const auto y = torch::randn({1, 8}), ctx = torch::randn({1, 3, 16});
  io::save_safetensors(dir / "in.safetensors", {{"x", x}, {"sigma", sigma}, {"y", y}, {"context", ctx}});
  const auto r = test::run_cli("forward --weights " + (dir / "w.safetensors").string() + " --inputs " +
                             (dir / "in.safetensors").string() + " --out " + (dir / "out.safetensors").string());
  REQUIRE(r.exit_code == 0);
  torch::NoGradGuard g;
  const auto expect = model->forward(x, sigma * 1000, y, ctx);
  const auto got = io::load_safetensors((dir / "out.safetensors").string())["out"];
  CHECK(torch::allclose(got, expect, 1e-5, 1e-6));

  // The weights copied column-major (the other CPU kernel): the same output.
  const auto column = test::run_cli("forward --weights " + (dir / "w.safetensors").string() + " --inputs " +
                                  (dir / "in.safetensors").string() + " --out " + (dir / "col.safetensors").string() +
                                  " --weight-layout column");
  REQUIRE(column.exit_code == 0);
  CHECK(torch::allclose(io::load_safetensors((dir / "col.safetensors").string())["out"], expect, 1e-5, 1e-6));
  const auto layout = test::run_cli("forward --weights " + (dir / "w.safetensors").string() + " --inputs " +
                                  (dir / "in.safetensors").string() + " --out " + (dir / "o.safetensors").string() +
                                  " --weight-layout diagonal");
  CHECK(layout.exit_code == 2);
  CHECK_THAT(layout.err, Contains("--weight-layout must be auto, row or column"));

  const auto skip = test::run_cli("forward --weights " + (dir / "w.safetensors").string() + " --inputs " +
                                (dir / "in.safetensors").string() + " --out " + (dir / "skip.safetensors").string() +
                                " --skip-layers 0");
  REQUIRE(skip.exit_code == 0);
  CHECK(torch::allclose(io::load_safetensors((dir / "skip.safetensors").string())["out"],
                        model->forward(x, sigma * 1000, y, ctx, {0}), 1e-5, 1e-6));

  io::save_safetensors(dir / "partial.safetensors", {{"x", x}, {"sigma", sigma}, {"y", y}});
  const auto missing = test::run_cli("forward --weights " + (dir / "w.safetensors").string() + " --inputs " +
                                   (dir / "partial.safetensors").string() + " --out " + (dir / "o.safetensors").string());
  CHECK(missing.exit_code == 2);
  CHECK_THAT(missing.err, Contains("input tensor 'context' is missing"));
  CHECK(test::run_cli("forward --weights " + (dir / "in.safetensors").string() + " --inputs " +
                    (dir / "in.safetensors").string() + " --out " + (dir / "o.safetensors").string())
            .exit_code == 2);
  CHECK(test::run_cli("forward --weights " + (dir / "w.safetensors").string() + " --inputs " +
                    (dir / "in.safetensors").string() + " --out " + (dir / "o.safetensors").string() + " --dtype f8")
            .exit_code == 2);
}

#ifdef DIFFUSE_TESTDATA_DIR
TEST_CASE("diffuse forward reproduces the reference mmdit_a output", "[cli][mmdit][parity]") {
  const std::string d = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
  test::TempDir dir;
  for (const std::string layout : {"auto", "row", "column"}) {
    INFO("--weight-layout " << layout);
    const auto r = test::run_cli("forward --weights " + d + "mmdit_a.weights.safetensors --inputs " + d +
                               "mmdit_a.io.safetensors --out " + (dir / "o.safetensors").string() +
                               " --weight-layout " + layout);
    REQUIRE(r.exit_code == 0);
    const auto ref = io::load_safetensors(d + "mmdit_a.io.safetensors")["out"];
    const auto got = io::load_safetensors((dir / "o.safetensors").string())["out"];
    CHECK((got - ref).abs().max().item<double>() <= 2e-5 * std::max(1.0, ref.abs().max().item<double>()));
  }
}
#endif

}  // namespace t_cli_forward
