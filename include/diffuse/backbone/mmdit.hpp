#pragma once
// The multimodal diffusion transformer of SD3 (paper section 4, Figure 2): image patches and text
// tokens in two streams with their own weights, joined in one attention per block; SD3.5's
// QK-RMSNorm and MMDiT-X's extra image-only self-attention (SD3.5-medium) are config-time
// structure. Registered module names equal the reference checkpoint's keys, so state_dict()
// matches `model.diffusion_model.*` without the prefix (see io/mmdit_checkpoint.hpp for loading).
#include <optional>
#include <set>
#include <vector>

#include <torch/autograd.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include "diffuse/backbone/mmdit_config.hpp"
#include "diffuse/core/format.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/nn/attention.hpp"
#include "diffuse/nn/embeddings.hpp"
#include "diffuse/nn/layers.hpp"
#include "diffuse/nn/mlp.hpp"
#include "diffuse/nn/modulated_layer_norm.hpp"
#include "diffuse/nn/modulation.hpp"
#include "diffuse/nn/rowwise_linear.hpp"
#include "diffuse/nn/self_attention.hpp"

namespace diffuse::backbone {

// What a stream block hands from pre_attention to post_attention (candle's named structs).
struct StreamIntermediates {
  torch::Tensor x;                     // (B, L, D) the block input (residual stream)
  torch::Tensor gate_msa, shift_mlp, scale_mlp, gate_mlp;  // (B, D)
  torch::Tensor gate_msa2;             // MMDiT-X only
};

// One stream of a joint block ("DismantledBlock" in the reference): adaLN-Zero modulation with
// (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp[, shift_msa2, scale_msa2,
// gate_msa2]) chunks, or (shift, scale) for the pre-only last context block.
class StreamBlockImpl : public torch::nn::Module {
 public:
  StreamBlockImpl(const MMDiTConfig& c, bool pre_only, bool x_self_attn)
      : pre_only_(pre_only), x_self_attn_(x_self_attn) {
    const auto d = c.hidden_size();
    attn = register_module("attn", nn::SelfAttention(d, c.num_heads(), c.qk_norm, pre_only));
    if (x_self_attn) attn2 = register_module("attn2", nn::SelfAttention(d, c.num_heads(), c.qk_norm, false));
    if (!pre_only) mlp = register_module("mlp", nn::Mlp(d, c.mlp_hidden()));
    const int mods = pre_only ? 2 : x_self_attn ? 9 : 6;
    adaLN_modulation = register_module("adaLN_modulation",
                                       torch::nn::Sequential(torch::nn::SiLU(), nn::linear(d, mods * d)));
  }

  struct Pre {
    nn::QKV qkv, qkv2;  // qkv2: MMDiT-X's image-only attention
    StreamIntermediates inter;
  };

  // x: (B, L, D), c: (B, D)
  Pre pre_attention(const torch::Tensor& x, const torch::Tensor& c) {
    const auto mods = nn::rowwise_linear(nn::linear_at(adaLN_modulation, 1), torch::silu(c))
                          .chunk(pre_only_ ? 2 : x_self_attn_ ? 9 : 6, 1);
    Pre p;
    // one fused pass (nn/modulated_layer_norm.hpp); MMDiT-X modulates the same norm twice
    const auto xn = x_self_attn_ ? nn::layer_norm_no_affine(x) : torch::Tensor();
    p.qkv = attn->pre_attention(x_self_attn_ ? nn::modulate(xn, mods[0], mods[1]) : nn::modulated_layer_norm(x, mods[0], mods[1]));
    if (pre_only_) return p;
    p.inter = {x, mods[2], mods[3], mods[4], mods[5], {}};
    if (x_self_attn_) {
      p.qkv2 = attn2->pre_attention(nn::modulate(xn, mods[6], mods[7]));
      p.inter.gate_msa2 = mods[8];
    }
    return p;
  }

  // attn_out: this stream's rows of the joint attention; attn2_out: MMDiT-X self-attention.
  torch::Tensor post_attention(const torch::Tensor& attn_out, const StreamIntermediates& in,
                               const torch::Tensor& attn2_out = {}) {
    auto x = torch::addcmul(in.x, in.gate_msa.unsqueeze(1), attn->post_attention(attn_out));
    if (x_self_attn_) x = torch::addcmul(x, in.gate_msa2.unsqueeze(1), attn2->post_attention(attn2_out));
    const auto h = mlp(nn::modulated_layer_norm(x, in.shift_mlp, in.scale_mlp));
    return torch::addcmul(x, in.gate_mlp.unsqueeze(1), h);
  }

  bool pre_only() const { return pre_only_; }
  bool x_self_attn() const { return x_self_attn_; }

  nn::SelfAttention attn{nullptr}, attn2{nullptr};
  nn::Mlp mlp{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};

 private:
  bool pre_only_, x_self_attn_;
};
TORCH_MODULE(StreamBlock);

// A joint block: both streams' q, k, v concatenated as [context; x] into one attention.
class JointBlockImpl : public torch::nn::Module {
 public:
  JointBlockImpl(const MMDiTConfig& c, bool last, bool x_self_attn) : heads_(c.num_heads()) {
    context_block = register_module("context_block", StreamBlock(c, last, false));
    x_block = register_module("x_block", StreamBlock(c, false, x_self_attn));
  }

  struct Out {
    torch::Tensor context;  // undefined after the last block
    torch::Tensor x;
  };

  Out forward(const torch::Tensor& context, const torch::Tensor& x, const torch::Tensor& c) {
    auto cp = context_block->pre_attention(context, c);
    auto xp = x_block->pre_attention(x, c);
    const auto lc = context.size(1);
    const auto o = nn::attention(torch::cat({cp.qkv.q, xp.qkv.q}, 1), torch::cat({cp.qkv.k, xp.qkv.k}, 1),
                                 torch::cat({cp.qkv.v, xp.qkv.v}, 1), heads_);  // (B, Lc + Lx, D)
    Out out;
    if (!context_block->pre_only()) out.context = context_block->post_attention(o.narrow(1, 0, lc), cp.inter);
    torch::Tensor attn2;
    if (x_block->x_self_attn()) attn2 = nn::attention(xp.qkv2.q, xp.qkv2.k, xp.qkv2.v, heads_);
    out.x = x_block->post_attention(o.narrow(1, lc, x.size(1)), xp.inter, attn2);
    return out;
  }

  StreamBlock context_block{nullptr}, x_block{nullptr};

 private:
  std::int64_t heads_;
};
TORCH_MODULE(JointBlock);

// Activation recomputation for a joint block (gradient checkpointing, Chen et al. 2016): the
// forward keeps only the block's inputs; the backward runs the block again with autograd on and
// backpropagates through that, so the block's activations live during its own backward only.
// Time for one more forward of the block. `trigger` is an empty tensor that requires grad, so
// the node is recorded even when no input does (LoRA: frozen embedders, adapters inside the block).
struct RecomputedJointBlock : torch::autograd::Function<RecomputedJointBlock> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& context,
                                                const torch::Tensor& x, const torch::Tensor& c, const torch::Tensor& trigger,
                                                JointBlockImpl* block) {
    (void)trigger;
    ctx->save_for_backward({context, x, c});
    ctx->saved_data["block"] = reinterpret_cast<std::int64_t>(block);
    ctx->saved_data["autocast"] = cpu_autocast_enabled();
    ctx->saved_data["grads"] = c10::List<bool>({context.requires_grad(), x.requires_grad(), c.requires_grad()});
    // The forward as the backward will redo it (some kernels take another path without autograd or
    // for inputs that need no gradient): autograd on, inputs cut from the graph but marked as
    // before; the block's graph is dropped at once with the outputs' detach.
    torch::AutoGradMode on(true);
    auto out = block->forward(context.detach().requires_grad_(context.requires_grad()),
                              x.detach().requires_grad_(x.requires_grad()), c.detach().requires_grad_(c.requires_grad()));
    return {out.context.detach(), out.x.detach()};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const auto needs = ctx->saved_data["grads"].toBoolList();
    auto* block = reinterpret_cast<JointBlockImpl*>(ctx->saved_data["block"].toInt());
    std::vector<torch::Tensor> in;
    for (std::size_t i = 0; i < 3; ++i) in.push_back(saved[i].detach().requires_grad_(needs[i]));
    torch::autograd::variable_list outs, grads;
    {
      torch::AutoGradMode on(true);
      CpuAutocast amp(ctx->saved_data["autocast"].toBool());
      const auto out = block->forward(in[0], in[1], in[2]);
      for (const auto& [o, g] : {std::pair{out.context, grad[0]}, std::pair{out.x, grad[1]}})
        if (o.defined() && g.defined() && o.requires_grad()) outs.push_back(o), grads.push_back(g);
    }
    if (!outs.empty()) torch::autograd::backward(outs, grads);
    return {needs[0] ? in[0].grad() : torch::Tensor(), needs[1] ? in[1].grad() : torch::Tensor(),
            needs[2] ? in[2].grad() : torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

class FinalLayerImpl : public torch::nn::Module {
 public:
  explicit FinalLayerImpl(const MMDiTConfig& c) {
    const auto d = c.hidden_size();
    linear = register_module("linear", nn::linear(d, c.patch * c.patch * c.out_ch()));
    adaLN_modulation = register_module("adaLN_modulation",
                                       torch::nn::Sequential(torch::nn::SiLU(), nn::linear(d, 2 * d)));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& c) {
    const auto m = nn::rowwise_linear(nn::linear_at(adaLN_modulation, 1), torch::silu(c)).chunk(2, 1);  // (shift, scale)
    return nn::rowwise_linear(linear, nn::modulated_layer_norm(x, m[0], m[1]));
  }
  torch::nn::Linear linear{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};
};
TORCH_MODULE(FinalLayer);

// Activations a caller may want to see (parity tests, debugging); filled when passed.
struct MMDiTTrace {
  torch::Tensor x_embed, pos_embed_cropped, t_emb, y_emb, c, context_embed, final_layer;
  std::vector<torch::Tensor> block_x, block_context;
};

class MMDiTImpl : public torch::nn::Module {
 public:
  // init_pos_embed: generate the sin-cos table (training from scratch); loaders pass false and
  // fill the buffer from the checkpoint (the released tables are always read, SD3_FACTS (d) 10).
  explicit MMDiTImpl(MMDiTConfig config, bool init_pos_embed = true) : config_(std::move(config)) {
    config_.validate();
    const auto d = config_.hidden_size();
    x_embedder = register_module("x_embedder", nn::PatchEmbed(config_.in_channels, d, config_.patch));
    t_embedder = register_module("t_embedder", nn::TimestepEmbedder(d));
    y_embedder = register_module("y_embedder", nn::MLPEmbedder(config_.adm_in, d));
    context_embedder = register_module("context_embedder", nn::linear(config_.context_in, d));
    const auto p = config_.pos_embed_max_size;
    pos_embed = register_buffer("pos_embed", init_pos_embed ? nn::sincos_pos_embed_2d(d, p) : torch::zeros({1, p * p, d}));
    joint_blocks = register_module("joint_blocks", torch::nn::ModuleList());
    for (int i = 0; i < config_.depth; ++i)
      joint_blocks->push_back(JointBlock(config_, i == config_.depth - 1, config_.has_x_self_attn(i)));
    final_layer = register_module("final_layer", FinalLayer(config_));
  }

  const MMDiTConfig& config() const { return config_; }

  // x: (B, C, H, W) latent; t: (B) = 1000 sigma; y: (B, adm_in); context: (B, L, context_in).
  // skip_layers: joint blocks bypassed entirely (skip-layer guidance). block_residuals: a
  // ControlNet's outputs (backbone/controlnet.hpp), n of them (B, T, D); after joint block i the
  // image tokens get residual i / (depth / n), as the reference adds them (a skipped block gets
  // none). Returns (B, C_out, H, W).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y,
                        const torch::Tensor& context, const std::set<int>& skip_layers = {},
                        MMDiTTrace* trace = nullptr, const std::vector<torch::Tensor>& block_residuals = {}) {
    check_inputs(x, t, y, context);
    const auto n_res = static_cast<int>(block_residuals.size());
    const int interval = n_res > 0 ? residual_interval(config_.depth, n_res) : 1;
    if (interval == 0)
      throw InputError("MM-DiT input: " + std::to_string(n_res) + " ControlNet residuals cannot feed " +
                       std::to_string(config_.depth) + " joint blocks");
    auto add_residual = [&](torch::Tensor& tokens, int i) {
      if (n_res > 0) tokens = tokens + block_residuals[static_cast<std::size_t>(i / interval)];
    };
    const auto p = config_.patch;
    const auto h = x.size(2) / p, w = x.size(3) / p;
    const auto xe = x_embedder(x);                                 // (B, T, D)
    const auto pe = nn::crop_pos_embed(pos_embed, h, w).to(xe.dtype());  // (1, T, D)
    auto tokens = xe + pe;
    const auto t_emb = t_embedder(t, tokens.scalar_type());        // (B, D)
    const auto y_emb = y_embedder(y);                              // (B, D)
    const auto c = t_emb + y_emb;
    auto ctx = nn::rowwise_linear(context_embedder, context);  // (B, L, D)
    if (trace) *trace = {xe, pe, t_emb, y_emb, c, ctx, {}, {}, {}};
    const bool recording = at::GradMode::is_enabled() && recompute_every > 0 && !trace;
    const auto trigger = recording ? torch::empty({0}, torch::requires_grad()) : torch::Tensor();
    for (int i = 0; i < config_.depth; ++i) {
      if (skip_layers.count(i)) continue;
      auto* block = joint_blocks[i]->as<JointBlock>();
      if (recording && i % recompute_every == 0 && i != config_.depth - 1) {  // the last block's context output is empty
        const auto out = RecomputedJointBlock::apply(ctx, tokens, c, trigger, block);
        ctx = out[0];
        tokens = out[1];
        add_residual(tokens, i);
        continue;
      }
      auto out = block->forward(ctx, tokens, c);
      ctx = out.context;
      tokens = out.x;
      add_residual(tokens, i);
      if (trace) {
        trace->block_x.push_back(tokens);
        trace->block_context.push_back(ctx);
      }
    }
    const auto fl = final_layer(tokens, c);  // (B, T, p*p*C)
    if (trace) trace->final_layer = fl;
    return nn::unpatchify(fl, h, w, p, config_.out_ch());
  }

  // Training memory: with autograd on, every recompute_every-th joint block (0, k, 2k, ...; not the
  // last) keeps only its inputs and is run again in the backward (RecomputedJointBlock). 0: none.
  int recompute_every = 0;

  nn::PatchEmbed x_embedder{nullptr};
  nn::TimestepEmbedder t_embedder{nullptr};
  nn::MLPEmbedder y_embedder{nullptr};
  torch::nn::Linear context_embedder{nullptr};
  torch::Tensor pos_embed;
  torch::nn::ModuleList joint_blocks{nullptr};
  FinalLayer final_layer{nullptr};

 private:
  void check_inputs(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y,
                    const torch::Tensor& context) const {
    auto fail = [](const std::string& m) { throw InputError("MM-DiT input: " + m); };
    auto shape = [](const torch::Tensor& a) { return format_shape(a.sizes().vec()); };
    if (x.dim() != 4 || x.size(1) != config_.in_channels)
      fail("x must be [B, " + std::to_string(config_.in_channels) + ", H, W], got " + shape(x));
    const auto b = x.size(0);
    if (t.dim() != 1 || t.size(0) != b) fail("t must be [" + std::to_string(b) + "], got " + shape(t));
    if (y.dim() != 2 || y.size(0) != b || y.size(1) != config_.adm_in)
      fail("y must be [" + std::to_string(b) + ", " + std::to_string(config_.adm_in) + "], got " + shape(y));
    if (context.dim() != 3 || context.size(0) != b || context.size(2) != config_.context_in)
      fail("context must be [" + std::to_string(b) + ", L, " + std::to_string(config_.context_in) + "], got " +
           shape(context));
  }

  MMDiTConfig config_;
};
TORCH_MODULE(MMDiT);

}  // namespace diffuse::backbone
