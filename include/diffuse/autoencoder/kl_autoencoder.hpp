#pragma once
// The KL autoencoder of SD3 (the LDM "SDVAE" with 16 latent channels at 8x downsampling;
// SD3_FACTS (c)): residual blocks with GroupNorm(32, eps 1e-6) and SiLU, strided downsampling after
// a (right 1, bottom 1) zero pad, nearest x2 upsampling, and a single-head attention block in the
// middle. Module names equal the reference checkpoint keys (`encoder.down.0.block.1.conv2.weight`,
// `decoder.mid.attn_1.q.weight`, ...); widths, multipliers, blocks per level, latent channels and
// GroupNorm groups come from the config, with an SD3 preset.
#include <charconv>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <system_error>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

#include "diffuse/core/config.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/format.hpp"
#include "diffuse/io/module_weights.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/nn/layers.hpp"

namespace diffuse::autoencoder {

struct KLAutoencoderConfig {
  BOOST_HANA_DEFINE_STRUCT(KLAutoencoderConfig,
                           (int, ch),                   // base width (SD3: 128)
                           (std::vector<int>, ch_mult),  // per level (SD3: 1, 2, 4, 4); levels - 1 = log2(factor)
                           (int, num_res_blocks),       // per encoder level; the decoder has one more (SD3: 2)
                           (int, in_channels),          // image channels (3)
                           (int, z_channels),           // latent channels (SD3: 16)
                           (int, norm_groups));         // GroupNorm groups (SD3: 32); not in the weights' shapes
  static KLAutoencoderConfig sd3() { return {128, {1, 2, 4, 4}, 2, 3, 16, 32}; }
  int levels() const { return static_cast<int>(ch_mult.size()); }
  int factor() const { return 1 << (levels() - 1); }
  void validate() const {
    if (norm_groups < 1) throw InputError("autoencoder config: norm_groups must be positive (SD3: 32)");
    if (ch < norm_groups || ch % norm_groups)
      throw InputError("autoencoder config: ch must be a positive multiple of norm_groups (" + std::to_string(norm_groups) +
                       ": GroupNorm)");
    if (ch_mult.empty() || num_res_blocks < 1 || in_channels < 1 || z_channels < 1)
      throw InputError("autoencoder config: ch_mult, num_res_blocks, in_channels and z_channels must be positive");
    for (int m : ch_mult)
      if (m < 1) throw InputError("autoencoder config: ch_mult entries must be positive");
  }
};

namespace vae {

inline torch::nn::GroupNorm group_norm(int groups, int channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(1e-6));
}
// GroupNorm in its parameters' dtype: under bfloat16 autocast the convolutions hand it bfloat16,
// which LibTorch 1.13's CPU kernel refuses beside float32 weights (and statistics are better in
// float32 anyway); the next convolution casts back.
inline torch::Tensor normed(torch::nn::GroupNorm& n, const torch::Tensor& x) { return n(x.to(n->weight.scalar_type())); }
inline torch::nn::Conv2d conv(int in, int out, int k, int stride = 1, int pad = 0) {
  return nn::conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(pad));
}

class ResnetBlockImpl : public torch::nn::Module {
 public:
  ResnetBlockImpl(int groups, int in, int out) {
    norm1 = register_module("norm1", group_norm(groups, in));
    conv1 = register_module("conv1", conv(in, out, 3, 1, 1));
    norm2 = register_module("norm2", group_norm(groups, out));
    conv2 = register_module("conv2", conv(out, out, 3, 1, 1));
    if (in != out) nin_shortcut = register_module("nin_shortcut", conv(in, out, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = conv1(torch::silu(normed(norm1, x)));
    h = conv2(torch::silu(normed(norm2, h)));
    return (nin_shortcut ? nin_shortcut(x) : x) + h;
  }
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, nin_shortcut{nullptr};
};
TORCH_MODULE(ResnetBlock);

// Single-head attention over all positions, q/k/v/proj_out as 1x1 convolutions, scale C^-1/2.
class AttnBlockImpl : public torch::nn::Module {
 public:
  AttnBlockImpl(int groups, int c) {
    norm = register_module("norm", group_norm(groups, c));
    q = register_module("q", conv(c, c, 1));
    k = register_module("k", conv(c, c, 1));
    v = register_module("v", conv(c, c, 1));
    proj_out = register_module("proj_out", conv(c, c, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto h = normed(norm, x);
    const auto b = x.size(0), c = x.size(1), hh = x.size(2), ww = x.size(3);
    auto flat = [&](const torch::Tensor& t) { return t.reshape({b, c, hh * ww}).transpose(1, 2); };  // (B, HW, C)
    const auto w = torch::softmax(torch::bmm(flat(q(h)), flat(k(h)).transpose(1, 2)) / std::sqrt(double(c)), -1);
    const auto o = torch::bmm(w, flat(v(h))).transpose(1, 2).reshape({b, c, hh, ww});
    return x + proj_out(o);
  }
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d q{nullptr}, k{nullptr}, v{nullptr}, proj_out{nullptr};
};
TORCH_MODULE(AttnBlock);

// Downsample: zero pad right and bottom by one, then a 3x3 stride-2 convolution without padding.
class DownsampleImpl : public torch::nn::Module {
 public:
  explicit DownsampleImpl(int c) { conv = register_module("conv", vae::conv(c, c, 3, 2, 0)); }
  torch::Tensor forward(const torch::Tensor& x) { return conv(torch::constant_pad_nd(x, {0, 1, 0, 1}, 0)); }
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample);

// Upsample: nearest x2, then a 3x3 convolution.
class UpsampleImpl : public torch::nn::Module {
 public:
  explicit UpsampleImpl(int c) { conv = register_module("conv", vae::conv(c, c, 3, 1, 1)); }
  torch::Tensor forward(const torch::Tensor& x) {
    return conv(at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
  }
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample);

// One resolution level: `block` (ModuleList of ResnetBlocks) and an optional `downsample`/`upsample`.
class LevelImpl : public torch::nn::Module {
 public:
  LevelImpl() { block = register_module("block", torch::nn::ModuleList()); }
  torch::nn::ModuleList block{nullptr};
  Downsample downsample{nullptr};
  Upsample upsample{nullptr};
};
TORCH_MODULE(Level);

class MidImpl : public torch::nn::Module {
 public:
  MidImpl(int groups, int c) {
    block_1 = register_module("block_1", ResnetBlock(groups, c, c));
    attn_1 = register_module("attn_1", AttnBlock(groups, c));
    block_2 = register_module("block_2", ResnetBlock(groups, c, c));
  }
  ResnetBlock block_1{nullptr}, block_2{nullptr};
  AttnBlock attn_1{nullptr};
};
TORCH_MODULE(Mid);

}  // namespace vae

// Activations for parity tests: per-level block outputs and the middle's outputs (batch element 0).
struct VAETrace {
  std::vector<torch::Tensor> level_out;  // index = level
  torch::Tensor conv_in, mid_attn, mid_out;
};

class KLEncoderImpl : public torch::nn::Module {
 public:
  explicit KLEncoderImpl(const KLAutoencoderConfig& c) {
    conv_in = register_module("conv_in", vae::conv(c.in_channels, c.ch, 3, 1, 1));
    down = register_module("down", torch::nn::ModuleList());
    int block_in = c.ch;
    for (int i = 0; i < c.levels(); ++i) {
      vae::Level level;
      const int block_out = c.ch * c.ch_mult[i];
      for (int j = 0; j < c.num_res_blocks; ++j, block_in = block_out)
        level->block->push_back(vae::ResnetBlock(c.norm_groups, block_in, block_out));
      if (i != c.levels() - 1) level->downsample = level->register_module("downsample", vae::Downsample(block_in));
      down->push_back(level);
    }
    mid = register_module("mid", vae::Mid(c.norm_groups, block_in));
    norm_out = register_module("norm_out", vae::group_norm(c.norm_groups, block_in));
    conv_out = register_module("conv_out", vae::conv(block_in, 2 * c.z_channels, 3, 1, 1));
  }
  // (B, 3, H, W) in [-1, 1] -> moments (B, 2 z, H / f, W / f)
  torch::Tensor forward(const torch::Tensor& x, VAETrace* trace = nullptr) {
    auto h = conv_in(x);
    if (trace) trace->conv_in = h;
    for (std::size_t i = 0; i < down->size(); ++i) {
      auto level = down[i]->as<vae::LevelImpl>();
      for (const auto& b : *level->block) h = b->as<vae::ResnetBlockImpl>()->forward(h);
      if (trace) trace->level_out.push_back(h);
      if (level->downsample) h = level->downsample(h);
    }
    h = mid->block_1(h);
    h = mid->attn_1(h);
    if (trace) trace->mid_attn = h;
    h = mid->block_2(h);
    if (trace) trace->mid_out = h;
    return conv_out(torch::silu(vae::normed(norm_out, h)));
  }
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down{nullptr};
  vae::Mid mid{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
};
TORCH_MODULE(KLEncoder);

class KLDecoderImpl : public torch::nn::Module {
 public:
  explicit KLDecoderImpl(const KLAutoencoderConfig& c) {
    int block_in = c.ch * c.ch_mult.back();
    conv_in = register_module("conv_in", vae::conv(c.z_channels, block_in, 3, 1, 1));
    mid = register_module("mid", vae::Mid(c.norm_groups, block_in));
    std::vector<vae::Level> levels(static_cast<std::size_t>(c.levels()), nullptr);
    for (int i = c.levels() - 1; i >= 0; --i) {  // built from the lowest resolution up, stored by level index
      vae::Level level;
      const int block_out = c.ch * c.ch_mult[i];
      for (int j = 0; j <= c.num_res_blocks; ++j, block_in = block_out)
        level->block->push_back(vae::ResnetBlock(c.norm_groups, block_in, block_out));
      if (i != 0) level->upsample = level->register_module("upsample", vae::Upsample(block_in));
      levels[static_cast<std::size_t>(i)] = level;
    }
    up = register_module("up", torch::nn::ModuleList());
    for (auto& l : levels) up->push_back(l);
    norm_out = register_module("norm_out", vae::group_norm(c.norm_groups, block_in));
    conv_out = register_module("conv_out", vae::conv(block_in, c.in_channels, 3, 1, 1));
  }
  // (B, z, h, w) -> (B, 3, h f, w f), about [-1, 1]
  torch::Tensor forward(const torch::Tensor& z, VAETrace* trace = nullptr) {
    auto h = conv_in(z);
    if (trace) trace->conv_in = h;
    h = mid->block_1(h);
    h = mid->attn_1(h);
    if (trace) trace->mid_attn = h;
    h = mid->block_2(h);
    if (trace) {
      trace->mid_out = h;
      trace->level_out.assign(up->size(), {});
    }
    for (int i = static_cast<int>(up->size()) - 1; i >= 0; --i) {
      auto level = up[static_cast<std::size_t>(i)]->as<vae::LevelImpl>();
      for (const auto& b : *level->block) h = b->as<vae::ResnetBlockImpl>()->forward(h);
      if (trace) trace->level_out[static_cast<std::size_t>(i)] = h;
      if (level->upsample) h = level->upsample(h);
    }
    return conv_out(torch::silu(vae::normed(norm_out, h)));
  }
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  vae::Mid mid{nullptr};
  torch::nn::ModuleList up{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
};
TORCH_MODULE(KLDecoder);

// The latent distribution of an image: mean and log-variance (clamped to [-30, 20] as the reference does).
struct LatentDistribution {
  torch::Tensor mean, logvar;
  torch::Tensor std() const { return torch::exp(0.5 * logvar); }
  torch::Tensor sample(const torch::Tensor& noise) const { return mean + std() * noise; }
};

class KLAutoencoderImpl : public torch::nn::Module {
 public:
  explicit KLAutoencoderImpl(KLAutoencoderConfig c) : config_(std::move(c)) {
    config_.validate();
    encoder = register_module("encoder", KLEncoder(config_));
    decoder = register_module("decoder", KLDecoder(config_));
  }
  const KLAutoencoderConfig& config() const { return config_; }

  LatentDistribution encode(const torch::Tensor& image, VAETrace* trace = nullptr) {
    check_image(image);
    const auto m = encoder->forward(image, trace).chunk(2, 1);
    return {m[0], m[1].clamp(-30.0, 20.0)};
  }
  torch::Tensor decode(const torch::Tensor& latent, VAETrace* trace = nullptr) {
    if (latent.dim() != 4 || latent.size(1) != config_.z_channels)
      throw InputError("autoencoder: latent must be [B, " + std::to_string(config_.z_channels) + ", h, w], got " +
                       std::to_string(latent.dim()) + "-d with " + std::to_string(latent.dim() > 1 ? latent.size(1) : 0) +
                       " channels");
    return decoder->forward(latent, trace);
  }

  KLEncoder encoder{nullptr};
  KLDecoder decoder{nullptr};

 private:
  void check_image(const torch::Tensor& x) const {
    if (x.dim() != 4 || x.size(1) != config_.in_channels)
      throw InputError("autoencoder: image must be [B, " + std::to_string(config_.in_channels) + ", H, W]");
    if (x.size(2) % config_.factor() || x.size(3) % config_.factor())
      throw InputError("autoencoder: image size " + std::to_string(x.size(2)) + "x" + std::to_string(x.size(3)) +
                       " is not divisible by the downsampling factor " + std::to_string(config_.factor()));
  }
  KLAutoencoderConfig config_;
};
TORCH_MODULE(KLAutoencoder);

// The diffusers name of an original-layout autoencoder key (SD3_FACTS (c)): down.i.block.j ->
// down_blocks.i.resnets.j, nin_shortcut -> conv_shortcut, mid.block_1/2 -> mid_block.resnets.0/1,
// mid.attn_1.{norm,q,k,v,proj_out} -> mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0},
// norm_out -> conv_norm_out, and the decoder's up.i -> up_blocks.(levels - 1 - i) (diffusers lists
// the decoder levels in the order they run).
inline std::string diffusers_vae_key(const std::string& k, int levels) {
  auto split = [](const std::string& s) {
    std::vector<std::string> parts;
    std::size_t a = 0;
    for (std::size_t b; (b = s.find('.', a)) != std::string::npos; a = b + 1) parts.push_back(s.substr(a, b - a));
    parts.push_back(s.substr(a));
    return parts;
  };
  auto p = split(k);
  std::vector<std::string> out{p[0]};  // encoder / decoder
  std::size_t i = 1;
  auto resnet_part = [&](std::size_t from) {
    for (std::size_t j = from; j < p.size(); ++j) out.push_back(p[j] == "nin_shortcut" ? "conv_shortcut" : p[j]);
  };
  if (p.size() > 3 && (p[1] == "down" || p[1] == "up")) {
    const bool up = p[1] == "up";
    const int level = std::stoi(p[2]);
    out.push_back(up ? "up_blocks" : "down_blocks");
    out.push_back(std::to_string(up ? levels - 1 - level : level));
    if (p[3] == "block") {
      out.push_back("resnets");
      resnet_part(4);
    } else {  // downsample / upsample
      out.push_back(up ? "upsamplers" : "downsamplers");
      out.push_back("0");
      for (std::size_t j = 4; j < p.size(); ++j) out.push_back(p[j]);
    }
  } else if (p.size() > 2 && p[1] == "mid") {
    out.push_back("mid_block");
    if (p[2] == "block_1" || p[2] == "block_2") {
      out.push_back("resnets");
      out.push_back(p[2] == "block_1" ? "0" : "1");
      resnet_part(3);
    } else {  // attn_1
      out.push_back("attentions");
      out.push_back("0");
      const std::string& m = p[3];
      if (m == "norm") out.push_back("group_norm");
      else if (m == "proj_out") out.insert(out.end(), {"to_out", "0"});
      else out.push_back("to_" + m);
      for (std::size_t j = 4; j < p.size(); ++j) out.push_back(p[j]);
    }
  } else {
    for (i = 1; i < p.size(); ++i) out.push_back(p[i] == "norm_out" ? "conv_norm_out" : p[i]);
  }
  std::string r;
  for (std::size_t j = 0; j < out.size(); ++j) r += (j ? "." : "") + out[j];
  return r;
}

// The single-head attention's q, k, v, proj_out are 1x1 convolutions in the original layout and
// Linear layers (2-D weights) in diffusers.
inline bool vae_attention_matrix(const std::string& original_key) {
  return original_key.find(".attn_1.") != std::string::npos && original_key.find(".norm.") == std::string::npos &&
         original_key.ends_with(".weight");
}

// Where an autoencoder lives in a file: its key prefix and layout.
struct AutoencoderLocation {
  std::string prefix;
  bool diffusers = false;
};

inline AutoencoderLocation locate_autoencoder(const io::SafetensorsFile& f) {
  for (const std::string prefix : {"first_stage_model.", "vae.", ""}) {
    if (f.contains(prefix + "decoder.conv_in.weight") && f.contains(prefix + "decoder.mid.attn_1.q.weight")) return {prefix, false};
    if (f.contains(prefix + "decoder.conv_in.weight") && f.contains(prefix + "decoder.mid_block.attentions.0.to_q.weight"))
      return {prefix, true};
  }
  throw InputError(f.path() + ": no autoencoder weights found (expected decoder.conv_in.weight with decoder.mid.attn_1 "
                   "(original layout) or decoder.mid_block.attentions.0 (diffusers layout))");
}

// The GroupNorm group count is not visible in any tensor's shape: a file trained here carries it in
// this metadata entry (autoencoder_metadata writes it); the released files, with 32, do not.
inline constexpr const char* norm_groups_metadata_key = "diffuse.vae_norm_groups";

inline std::map<std::string, std::string> autoencoder_metadata(const KLAutoencoderConfig& c) {
  return {{norm_groups_metadata_key, std::to_string(c.norm_groups)}};
}

// Reads the config from a checkpoint's shapes (either layout; prefix e.g. "first_stage_model.")
// and the group count from its metadata (32 when absent, as in the released files).
inline KLAutoencoderConfig detect_autoencoder_config(const io::SafetensorsFile& f, const std::string& p, bool diffusers = false) {
  auto dim = [&](const std::string& k, std::size_t i) -> int {
    const auto* t = f.header().find(p + k);
    if (!t || t->shape.size() <= i) throw InputError(f.path() + ": autoencoder weights lack " + p + k);
    return static_cast<int>(t->shape[i]);
  };
  KLAutoencoderConfig c{};
  c.norm_groups = 32;
  if (const auto it = f.metadata().find(norm_groups_metadata_key); it != f.metadata().end()) {
    const auto& text = it->second;
    int g = 0;
    const auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), g);
    if (err != std::errc{} || end != text.data() + text.size() || g < 1)
      throw InputError(f.path() + ": metadata " + norm_groups_metadata_key + " must be a positive integer, got \"" +
                       it->second + "\"");
    c.norm_groups = g;
  }
  c.ch = dim("encoder.conv_in.weight", 0);
  c.in_channels = dim("encoder.conv_in.weight", 1);
  c.z_channels = dim("decoder.conv_in.weight", 1);
  const std::string level = diffusers ? "encoder.down_blocks." : "encoder.down.";
  const std::string block = diffusers ? ".resnets." : ".block.";
  for (int i = 0; f.contains(p + level + std::to_string(i) + block + "0.conv1.weight"); ++i)
    c.ch_mult.push_back(dim(level + std::to_string(i) + block + "0.conv2.weight", 0) / c.ch);
  c.num_res_blocks = 0;
  while (f.contains(p + level + "0" + block + std::to_string(c.num_res_blocks) + ".conv1.weight")) ++c.num_res_blocks;
  c.validate();
  return c;
}

// Loads an autoencoder in the original layout (standalone, or under `first_stage_model.` in an
// all-in-one file) or the diffusers layout (vae/diffusion_pytorch_model.safetensors). Missing,
// unexpected and mis-shaped tensors are reported together, by their names in the file.
inline KLAutoencoder load_autoencoder(const std::string& path, std::optional<torch::ScalarType> dtype = std::nullopt) {
  io::SafetensorsFile f(path);
  const auto loc = locate_autoencoder(f);
  const auto& prefix = loc.prefix;
  const auto config = detect_autoencoder_config(f, prefix, loc.diffusers);
  auto model = io::construct_for_loading(dtype.value_or(torch::kFloat32), [&] { return KLAutoencoder(config); });
  torch::NoGradGuard g;
  std::vector<std::string> problems;
  std::set<std::string> used;
  io::LoadOptions lo;
  lo.dtype = dtype;
  lo.in_memory = true;
  for (auto& p : model->named_parameters(true)) {
    const auto key = prefix + (loc.diffusers ? diffusers_vae_key(p.key(), config.levels()) : p.key());
    const auto* info = f.header().find(key);
    if (!info) {
      problems.push_back("missing " + key);
      continue;
    }
    used.insert(info->name);
    auto want = p.value().sizes().vec();
    const bool matrix = loc.diffusers && vae_attention_matrix(p.key());
    if (matrix) want.resize(2);  // [C, C, 1, 1] stored as [C, C]
    if (info->shape != want) {
      problems.push_back("shape of " + info->name + ": expected " + format_shape(want) + ", found " + format_shape(info->shape));
      continue;
    }
    auto t = io::load_tensor(f, *info, lo);
    p.value().set_data(matrix ? t.reshape(p.value().sizes()) : t);
  }
  for (const auto& t : f.tensors())
    if (t.name.starts_with(prefix) && (t.name.starts_with(prefix + "encoder.") || t.name.starts_with(prefix + "decoder.")) &&
        !used.count(t.name))
      problems.push_back("unexpected " + t.name);
  throw_if_problems(path, "autoencoder weights do not match", problems);
  return model;
}

// The model's tensors in the original or diffusers layout (prefix prepended), for save_safetensors.
inline std::vector<std::pair<std::string, torch::Tensor>> autoencoder_tensors(KLAutoencoder& model, bool diffusers,
                                                                              const std::string& prefix = "") {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  const int levels = model->config().levels();
  for (const auto& p : model->named_parameters(true)) {
    if (!diffusers) {
      out.emplace_back(prefix + p.key(), p.value());
      continue;
    }
    const auto& v = p.value();
    out.emplace_back(prefix + diffusers_vae_key(p.key(), levels), vae_attention_matrix(p.key()) ? v.reshape({v.size(0), v.size(1)}) : v);
  }
  return out;
}

}  // namespace diffuse::autoencoder
