// `diffuse denoise`: deterministic sampling with a tiny MM-DiT, the trajectory tensors, bad options
// (exit code 2); with the parity data, the reference's sampler_c run (reads
// ../shared/testdata/sd3ref/mmdit_c.weights.safetensors and sampler_c.io.safetensors).
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "diffuse/io/mmdit_checkpoint.hpp"
#include "test_util.hpp"

namespace t_cli_denoise {

using namespace diffuse;
using Catch::Matchers::Contains;

TEST_CASE("diffuse denoise samples deterministically and writes the trajectory", "[cli][sampling]") {
  auto c = backbone::MMDiTConfig::scaling(2);
  c.adm_in = 8;
  c.context_in = 16;
  c.pos_embed_max_size = 4;
  torch::manual_seed(9);
  backbone::MMDiT model(c);
  test::TempDir dir;
  io::save_mmdit(dir / "w.safetensors", model, io::KeyLayout::Original);
  io::save_safetensors(dir / "in.safetensors", {{"noise", torch::randn({1, 16, 4, 4})},
                                                {"cond_context", torch::randn({1, 3, 16})}, {"cond_y", torch::randn({1, 8})},
                                                {"uncond_context", torch::zeros({1, 3, 16})}, {"uncond_y", torch::zeros({1, 8})}});
  const std::string base = "denoise --weights " + (dir / "w.safetensors").string() + " --inputs " +
                           (dir / "in.safetensors").string() + " --steps 5 --cfg 3 ";
  const auto a = test::run_cli(base + "--trajectory --out " + (dir / "a.safetensors").string());
  REQUIRE(a.exit_code == 0);
  CHECK_THAT(a.err, Contains("denoise 5/5"));
  const auto b = test::run_cli(base + "--out " + (dir / "b.safetensors").string());
  REQUIRE(b.exit_code == 0);
  const auto ra = io::load_safetensors((dir / "a.safetensors").string());
  const auto rb = io::load_safetensors((dir / "b.safetensors").string());
  CHECK(torch::equal(ra["x_final"], rb["x_final"]));
  CHECK(ra.contains("step4.denoised"));
  CHECK_FALSE(rb.contains("step0.x"));
  CHECK(torch::allclose(ra["latent_out"], ra["x_final"] / 1.5305 + 0.0609));
  for (const char* sampler : {"heun", "dpmpp_2m", "euler_stochastic"})
    CHECK(test::run_cli(base + "--sampler " + sampler + " --out " + (dir / "s.safetensors").string()).exit_code == 0);

  CHECK(test::run_cli(base + "--sampler bogus --out " + (dir / "x.safetensors").string()).exit_code == 2);
  CHECK(test::run_cli(base + "--schedule bogus --out " + (dir / "x.safetensors").string()).exit_code == 2);
  CHECK(test::run_cli(base + "--slg-scale 2 --skip-layers 9 --out " + (dir / "x.safetensors").string()).exit_code == 2);
  CHECK(test::run_cli(base + "--steps 0 --out " + (dir / "x.safetensors").string()).exit_code == 2);
}

#ifdef DIFFUSE_TESTDATA_DIR
TEST_CASE("diffuse denoise reproduces the reference sampler_c run", "[cli][sampling][parity]") {
  const std::string d = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
  test::TempDir dir;
  const auto r = test::run_cli("denoise --weights " + d + "mmdit_c.weights.safetensors --inputs " + d +
                             "sampler_c.io.safetensors --steps 6 --cfg 4 --shift 3 --slg-scale 2.5 --skip-layers 0 "
                             "--skip-layer-start 0.01 --skip-layer-end 0.5 --trajectory --out " + (dir / "o.safetensors").string());
  REQUIRE(r.exit_code == 0);
  const auto ref = io::load_safetensors(d + "sampler_c.io.safetensors");
  const auto got = io::load_safetensors((dir / "o.safetensors").string());
  for (const char* key : {"x_final", "latent_out", "step3.x", "step2.denoised"}) {
    INFO(key);
    const auto e = (got[key] - ref[key]).abs().max().item<double>();
    CHECK(e <= 2e-5 * std::max(1.0, ref[key].abs().max().item<double>()));
  }
}
#endif

}  // namespace t_cli_denoise
