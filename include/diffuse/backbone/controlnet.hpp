#pragma once
// The SD3 ControlNet (the SD3.5 reference's dit_embedder.py ControlNetEmbedder; configuration and
// its two forms in backbone/controlnet_config.hpp): from the noisy latent, the encoded control
// image, the timestep and the pooled text it makes one residual per block, which MMDiT::forward
// adds to the image tokens (block i gets residual i / interval). Registered names are the
// reference's, so a file in its layout loads by name (io/controlnet_checkpoint.hpp).
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/backbone/controlnet_config.hpp"
#include "diffuse/backbone/mmdit.hpp"
#include "diffuse/nn/layers.hpp"

namespace diffuse::backbone {

class ControlNetImpl : public torch::nn::Module {
 public:
  ControlNetImpl(ControlNetConfig config, const MMDiTConfig& base) : config_(config) {
    const auto d = config_.hidden;
    // The blocks are the MM-DiT's image stream (DismantledBlock) without QK-norm or MMDiT-X attention.
    MMDiTConfig block = base;
    block.hidden = d;
    block.heads = config_.heads;
    block.qk_norm = false;
    block.x_self_attn_layers.clear();
    block.mlp_ratio = static_cast<double>(config_.mlp_hidden) / d;
    if (config_.form == ControlNetForm::EmbeddedText2B)
      x_embedder = register_module("x_embedder", nn::PatchEmbed(config_.in_channels, d, config_.patch));
    pos_embed_input = register_module("pos_embed_input", nn::PatchEmbed(config_.in_channels, d, config_.patch));
    t_embedder = register_module("t_embedder", nn::TimestepEmbedder(d));
    y_embedder = register_module("y_embedder", nn::MLPEmbedder(config_.pooled_in, d));
    transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
    controlnet_blocks = register_module("controlnet_blocks", torch::nn::ModuleList());
    for (int i = 0; i < config_.layers; ++i) {
      transformer_blocks->push_back(StreamBlock(block, /*pre_only=*/false, /*x_self_attn=*/false));
      controlnet_blocks->push_back(nn::linear(d, d));
    }
  }

  const ControlNetConfig& config() const { return config_; }

  // x: (B, C, H, W) the latent the MM-DiT sees; t: (B) = 1000 sigma; y: (B, adm_in) the pooled
  // text; control: (B, C, H, W) the encoded control image; scale multiplies every residual (the
  // reference's `scale`, always 1 there). Returns the residuals, (B, T, D) each.
  std::vector<torch::Tensor> forward(MMDiT& base, const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y,
                                     const torch::Tensor& control, double scale = 1.0) {
    if (control.sizes() != x.sizes())
      throw InputError("ControlNet: the control latent is " + format_shape(control.sizes().vec()) + ", the latent " +
                       format_shape(x.sizes().vec()));
    const bool pooled_text = config_.form == ControlNetForm::PooledText8B;
    torch::Tensor tokens, text;
    if (pooled_text) {  // the MM-DiT's own patch embedding and positions
      const auto h = x.size(2) / config_.patch, w = x.size(3) / config_.patch;
      tokens = base->x_embedder(x);
      tokens = tokens + nn::crop_pos_embed(base->pos_embed, h, w).to(tokens.dtype());
      text = y;
    } else {
      tokens = x_embedder(x);
      text = base->y_embedder(y);
    }
    const auto c = t_embedder(t, tokens.scalar_type()) + y_embedder(text);
    tokens = tokens + pos_embed_input(control);
    std::vector<torch::Tensor> out;
    auto h = tokens;
    for (int i = 0; i < config_.layers; ++i) {
      auto* block = transformer_blocks[i]->as<StreamBlock>();
      const auto pre = block->pre_attention(h, c);
      auto o = block->post_attention(nn::attention(pre.qkv.q, pre.qkv.k, pre.qkv.v, config_.heads), pre.inter);
      if (pooled_text) h = o;  // the 2B form feeds every block the same input
      o = nn::rowwise_linear(*controlnet_blocks[i]->as<torch::nn::Linear>(), o);
      out.push_back(scale == 1.0 ? o : o * scale);
    }
    return out;
  }

  nn::PatchEmbed x_embedder{nullptr}, pos_embed_input{nullptr};
  nn::TimestepEmbedder t_embedder{nullptr};
  nn::MLPEmbedder y_embedder{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr}, controlnet_blocks{nullptr};

 private:
  ControlNetConfig config_;
};
TORCH_MODULE(ControlNet);

}  // namespace diffuse::backbone
