// Parity with the official SD3.5 reference (reads ../shared/testdata/sd3ref/mmdit_{a,b,c}.weights.safetensors
// and mmdit_{a,b,c}.io.safetensors in place): the output and every stored intermediate within
// max|ours - ref| <= 2e-5 x max(1, max|ref|) in float32 (testdata README, "Tolerance").
#include <catch2/catch.hpp>

#include <iostream>

#include <torch/torch.h>

#include "diffuse/io/mmdit_checkpoint.hpp"

#ifdef DIFFUSE_TESTDATA_DIR
namespace t_mmdit_parity {

using namespace diffuse;

double check_close(const std::string& what, const torch::Tensor& ours, const torch::Tensor& ref) {
  INFO(what);
  REQUIRE(ours.sizes() == ref.sizes());
  const double err = (ours.to(torch::kFloat64) - ref.to(torch::kFloat64)).abs().max().item<double>();
  const double scale = std::max(1.0, ref.abs().max().item<double>());
  CHECK(err <= 2e-5 * scale);
  return err / scale;
}

TEST_CASE("MM-DiT matches the SD3.5 reference on every stored tensor", "[mmdit][parity]") {
  // Both weight layouts: as stored (the row-major CPU kernel) and column-major (its own kernel).
  for (const std::string name : {"mmdit_a", "mmdit_b", "mmdit_c"})
  for (const auto layout : {nn::WeightLayout::RowMajor, nn::WeightLayout::ColumnMajor}) {
    const bool column = layout == nn::WeightLayout::ColumnMajor;
    DYNAMIC_SECTION(name << (column ? " column-major" : " row-major")) {
      const std::string dir = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
      io::MMDiTLoadOptions lo;
      lo.weight_layout = layout;
      auto model = io::load_mmdit(dir + name + ".weights.safetensors", lo);
      CHECK(nn::is_column_major(model->context_embedder->weight) == column);
      const auto io = io::load_safetensors(dir + name + ".io.safetensors");
      torch::NoGradGuard g;
      backbone::MMDiTTrace trace;
      const auto out = model->forward(io["x"], io["t"], io["y"], io["context"], {}, &trace);
      double worst = 0;
      worst = std::max(worst, check_close("out", out, io["out"]));
      worst = std::max(worst, check_close("denoised", io["x"] - out * io["sigma"].view({-1, 1, 1, 1}), io["denoised"]));
      worst = std::max(worst, check_close("inter.x_embed", trace.x_embed, io["inter.x_embed"]));
      worst = std::max(worst, check_close("inter.pos_embed_cropped", trace.pos_embed_cropped, io["inter.pos_embed_cropped"]));
      worst = std::max(worst, check_close("inter.t_emb", trace.t_emb, io["inter.t_emb"]));
      worst = std::max(worst, check_close("inter.y_emb", trace.y_emb, io["inter.y_emb"]));
      worst = std::max(worst, check_close("inter.c", trace.c, io["inter.c"]));
      worst = std::max(worst, check_close("inter.context_embed", trace.context_embed, io["inter.context_embed"]));
      worst = std::max(worst, check_close("inter.final_layer", trace.final_layer, io["inter.final_layer"]));
      std::size_t blocks = 0;
      for (std::size_t i = 0; i < trace.block_x.size(); ++i) {
        const auto key = "inter.block" + std::to_string(i);
        worst = std::max(worst, check_close(key + ".x", trace.block_x[i], io[key + ".x"]));
        if (io.contains(key + ".context")) worst = std::max(worst, check_close(key + ".context", trace.block_context[i], io[key + ".context"]));
        ++blocks;
      }
      CHECK(blocks == static_cast<std::size_t>(model->config().depth));
      if (io.contains("out_skip"))
        worst = std::max(worst, check_close("out_skip", model->forward(io["x"], io["t"], io["y"], io["context"], {0}), io["out_skip"]));
      // The generated sin-cos table equals the stored one (the reference's get_2d_sincos_pos_embed).
      const auto table = nn::sincos_pos_embed_2d(model->config().hidden_size(), model->config().pos_embed_max_size);
      worst = std::max(worst, check_close("generated pos_embed", table, model->pos_embed));
      std::cout << "parity " << name << (column ? " (column-major weights)" : " (row-major weights)") << ": worst max|ours - ref| / max(1, max|ref|) = " << worst << "\n";
    }
  }
}

}  // namespace t_mmdit_parity
#endif
