#pragma once
// Text-to-image with the released SD3 / SD3.5 checkpoints: load once, generate many.
//
//   auto files = pipeline::find_sd3_model("sd3.5_medium.safetensors", {.clip_l = ..., .tokenizers = ...});
//   pipeline::SD3Generator gen(files, {.dtype = torch::kBFloat16});
//   auto images = gen.generate({.prompts = {"a photo of a cat"}, .seed = 42});   // (B, 3, H, W) in [-1, 1]
//
// Stages run one after another — text encoders, MM-DiT, VAE — and with `release_stages` a stage's
// weights are dropped once it is done and read again (memory-mapped, so cheaply) when next needed,
// so peak memory is near the largest stage rather than the sum. Model files: the all-in-one file
// (model.diffusion_model.*, first_stage_model.*, text_encoders.*), an MM-DiT file with separate
// encoder and VAE files (the SD3.5 releases), or a diffusers folder (transformer/, vae/,
// text_encoder*/, tokenizer*/). Defaults are the reference's, chosen as it chooses them
// (pipeline/sd3_defaults.hpp); the starting noise is the reference's too (sampling/initial_noise.hpp).
// A ControlNet (SD3.5-large's blur, canny and depth; backbone/controlnet.hpp) steers the MM-DiT
// with a control image encoded as the reference encodes it.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <cstdio>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <torch/types.h>

#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/autoencoder/latent_format.hpp"
#include "diffuse/autoencoder/tiling.hpp"
#include "diffuse/encoders/sd3_text_conditioning.hpp"
#include "diffuse/io/controlnet_checkpoint.hpp"
#include "diffuse/io/lanczos_resize.hpp"
#include "diffuse/io/lora_file.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"
#include "diffuse/io/model_family.hpp"
#include "diffuse/io/module_weights.hpp"
#include "diffuse/pipeline/generation_parameters.hpp"
#include "diffuse/pipeline/pipeline.hpp"
#include "diffuse/pipeline/sd3_defaults.hpp"
#include "diffuse/sampling/guidance.hpp"
#include "diffuse/sampling/initial_noise.hpp"
#include "diffuse/sampling/method_choice.hpp"
#include "diffuse/sampling/sampler.hpp"
#include "diffuse/sampling/schedule.hpp"

namespace diffuse::pipeline {

// SD3 / SD3.5 inference from the released checkpoints as one typedef, like the training recipes:
// the SD3 text stack, the MM-DiT with the structure the checkpoint has (QK-norm, MMDiT-X layers),
// the 16-channel KL autoencoder with SD3's latent format, and the reference's sampler, DPM++ 2M on
// its schedule. A request (or a model's defaults: Turbo's Euler) may name another integration
// method of SD3SamplerMethods, chosen once per request; the schedule is the sampler slot's.
using SD3Inference = Pipeline<SD3Objective, encoders::SD3TextConditioning, backbone::MMDiTBackbone<backbone::QKNorm::AsStored>,
                              autoencoder::FrozenKL<autoencoder::SD3LatentFormat>,
                              sampling::ScheduledSampler<sampling::DPMPP2M, sampling::ReferenceSchedule>>;
using SD3SamplerMethods = std::tuple<sampling::Euler, sampling::Heun, sampling::DPMPP2M>;

// Where each part of a model is. Any text encoder may be empty (zeros in its place).
struct SD3ModelFiles {
  std::string mmdit, vae, clip_l, clip_g, t5, tokenizers;
  std::string controlnet;         // optional: an SD3 ControlNet for this MM-DiT
  std::string family = "custom";  // SD3-medium, SD3.5-medium, SD3.5-large (from the MM-DiT's shapes)
  SD3Defaults defaults;           // the reference's defaults for this model (pipeline/sd3_defaults.hpp)
};

namespace generator_detail {

// A sigma schedule made from the shift alone, as the generator makes it per request.
template <class S>
concept ScheduleWithShift = requires(double shift) { S{shift}.sigmas(1); };

// A diffusers text-encoder folder: its one .safetensors file, or the folder itself when the
// encoder is sharded (io::WeightFiles reads all shards); empty when there is none.
inline std::string encoder_weights(const std::filesystem::path& dir) {
  const auto found = io::safetensors_in(dir);
  return found.empty() ? std::string() : found.size() == 1 ? found[0] : dir.string();
}

inline std::string only_safetensors(const std::filesystem::path& dir, const std::string& what) {
  const auto found = io::safetensors_in(dir);
  if (found.size() > 1)
    throw InputError(dir.string() + ": " + what + " is split over " + std::to_string(found.size()) +
                     " files; sharded checkpoints are not read yet (merge them into one .safetensors)");
  return found.empty() ? std::string() : found[0];
}

// The width of the CLIP model playing `role` (clip_l / clip_g) in `file`, or -1.
inline std::int64_t clip_width(const std::string& file, const std::string& role) {
  if (file.empty()) return -1;
  io::WeightFiles f(file);
  std::int64_t any = -1;
  int count = 0;
  for (const auto& c : io::detect_components(f.tensors())) {
    if (c.kind != io::ComponentKind::CLIPText) continue;
    ++count;
    any = c.sizes.at("width");
    if (c.prefix.find(role) != std::string::npos) return any;
  }
  return count == 1 ? any : -1;
}

}  // namespace generator_detail

// Resolves a model path (file or diffusers folder) and the user's overrides (non-empty fields of
// `given` replace what was found).
inline SD3ModelFiles find_sd3_model(const std::string& model, const SD3ModelFiles& given = {}) {
  namespace fs = std::filesystem;
  SD3ModelFiles f;
  if (fs::is_directory(model)) {
    const fs::path d = model;
    if (!fs::is_directory(d / "transformer"))
      throw InputError(model + ": a folder must be a diffusers model (transformer/, vae/, text_encoder*/, tokenizer*/)");
    f.mmdit = generator_detail::only_safetensors(d / "transformer", "the transformer");
    f.vae = generator_detail::only_safetensors(d / "vae", "the VAE");
    f.clip_l = generator_detail::encoder_weights(d / "text_encoder");
    f.clip_g = generator_detail::encoder_weights(d / "text_encoder_2");
    f.t5 = generator_detail::encoder_weights(d / "text_encoder_3");
    f.tokenizers = model;
    if (f.mmdit.empty()) throw InputError(model + "/transformer: no .safetensors file");
  } else if (fs::is_regular_file(model)) {
    io::SafetensorsFile file(model);
    for (const auto& c : io::detect_components(file.tensors())) {
      using K = io::ComponentKind;
      if (c.kind == K::MMDiT) f.mmdit = model;
      if (c.kind == K::Autoencoder) f.vae = model;
      if (c.kind == K::T5Encoder) f.t5 = model;
      if (c.kind == K::CLIPText) {
        if (c.prefix.find("clip_g") != std::string::npos || c.sizes.at("width") == 1280) f.clip_g = model;
        else f.clip_l = model;
      }
    }
    if (f.mmdit.empty())
      throw InputError(model + ": holds no MM-DiT (see `diffuse inspect`); is it a text encoder or VAE file? Pass it with "
                       "--clip-l/--clip-g/--t5/--vae and the MM-DiT with --model");
  } else {
    throw InputError(model + ": model file or folder not found");
  }
  for (auto [dst, src] : {std::pair{&f.mmdit, &given.mmdit}, {&f.vae, &given.vae}, {&f.clip_l, &given.clip_l},
                          {&f.clip_g, &given.clip_g}, {&f.t5, &given.t5}, {&f.tokenizers, &given.tokenizers}})
    if (!src->empty()) *dst = *src;
  if (f.vae.empty())
    throw InputError(model + ": no VAE in the model; pass one with --vae (e.g. the SD3 release's vae or the "
                     "first_stage_model.* tensors of an all-in-one file)");
  io::SafetensorsFile mm(f.mmdit);
  for (const auto& c : io::detect_components(mm.tensors()))
    if (c.kind == io::ComponentKind::MMDiT) f.family = c.family;
  SD3ModelIdentity id;
  id.folder = fs::is_directory(model);
  auto named = fs::absolute(model).lexically_normal();
  if (!named.has_filename()) named = named.parent_path();  // "models/sd3/"
  id.base_name = id.folder ? named.filename().string() : named.stem().string();
  id.metadata = mm.metadata();
  id.family = f.family;
  f.defaults = sd3_defaults(id);
  if (!given.controlnet.empty()) {
    if (!fs::is_regular_file(given.controlnet)) throw InputError(given.controlnet + ": ControlNet file not found");
    f.controlnet = given.controlnet;
    apply_controlnet_defaults(f.defaults, fs::path(given.controlnet).stem().string());
  }
  return f;
}

struct SD3GeneratorOptions {
  torch::ScalarType dtype = torch::kBFloat16;      // MM-DiT and VAE compute dtype
  torch::ScalarType text_dtype = torch::kFloat32;  // text encoders (T5 overflows in float16)
  torch::Device device = torch::kCPU;
  bool release_stages = false;  // drop each stage's weights after use (peak memory ~ the largest stage)
  bool vae_tiling = false;
  int t5_length = 77;
  bool no_t5 = false;
  // MM-DiT Linear weights in memory (io::MMDiTLoadOptions::weight_layout): column-major copies make
  // a float32 CPU step faster; empty: column-major for float32 on an AVX-512 CPU, else as stored.
  std::optional<nn::WeightLayout> weight_layout;
  // LoRA files (diffusers/PEFT or kohya layout, io/lora_file.hpp) merged into the MM-DiT when it is
  // loaded, in order, each at its strength.
  struct Lora {
    std::string path;
    double strength = 1.0;
  };
  std::vector<Lora> loras;
};

struct GenerateRequest {
  std::vector<std::string> prompts;
  std::string negative;               // "" is the reference's unconditional prompt
  int width = 0, height = 0;          // 0: the family default
  int steps = 0;                      // 0: the family default
  std::optional<double> cfg, shift;   // empty: the family default
  std::string sampler;                // euler, heun, dpmpp_2m; empty: the family default
  bool skip_layer_cfg = false;        // skip-layer guidance with the model's preset (the reference's --skip_layer_cfg)
  std::optional<double> slg_scale;    // skip-layer guidance scale; empty: the preset's if asked for, else 0
  std::vector<int> skip_layers;       // empty: the preset's (7, 8, 9)
  std::optional<double> slg_start, slg_end;  // fractions of the steps; empty: the preset's (0.01, 0.2)
  std::uint64_t seed = 0;             // image i uses seed + i (torch.manual_seed semantics, CPU float32 noise)
  torch::Tensor init_image;           // img2img: (B or 1, 3, H, W) in [-1, 1]
  double strength = 0.8;
  // img2img and ControlNet: encode images as draws from the VAE posterior, the init image's first,
  // from one generator seeded so (the reference draws from torch's global one); empty: the mean.
  std::optional<std::uint64_t> posterior_seed;
  // ControlNet (the files' controlnet): the control image, 8-bit RGB of any size (resized to the
  // request's as the reference resizes it: io/lanczos_resize.hpp), and the residuals' scale (the
  // reference's is 1).
  std::optional<io::RGBImage> control_image;
  double control_strength = 1.0;
  sampling::StepCallback on_step;     // preview or stop (return false)
  std::function<void()> on_sampling_start;  // the models are loaded and the text encoded: step 1 begins
};

namespace generator_detail {

// The control image as the reference's _image_to_latent / vae_encode prepare it before the VAE:
// resized with Lanczos to the request's size, bytes / 255 in float32, then mapped to the range the
// ControlNet was trained on: 2B form and blur / depth 2x - 1, the 8B canny model x 255 x 0.5 + 0.5.
// Returns (1, 3, H, W) float32.
inline torch::Tensor control_pixels(const io::RGBImage& image, int width, int height, const backbone::ControlNetConfig& c) {
  auto img = io::lanczos_resize(image, width, height);
  auto x = torch::from_blob(img.data(), {height, width, 3}, torch::kUInt8).to(torch::kFloat32).div(255.0).permute({2, 0, 1}).unsqueeze(0);
  if (backbone::uses_canny_scaling(c)) return x.mul(255).mul(0.5).add(0.5);
  return x.mul(2.0).sub(1.0);
}

}  // namespace generator_detail

// The generator of a pipeline typedef P (SD3Inference, or a program's own: e.g. one fixed to
// SD3.5's QK-norm, which then refuses an SD3-medium file). What it reads of P: the conditioning
// (the SD3 text stack), the backbone policy (the MM-DiT; its QK-norm checked against the file),
// the autoencoder's latent format and the sampler slot's schedule; Methods lists the integration
// methods a request may name.
template <class P = SD3Inference, class Methods = SD3SamplerMethods>
class BasicSD3Generator {
  static_assert(std::is_same_v<typename P::conditioning_type, encoders::SD3TextConditioning>,
                "BasicSD3Generator: the pipeline's conditioning slot must be encoders::SD3TextConditioning (the "
                "released CLIP-L, CLIP-G and T5 stack), e.g. pipeline::SD3Inference");
  static_assert(std::is_same_v<typename P::backbone_type::module_type, backbone::MMDiT>,
                "BasicSD3Generator: the pipeline's backbone slot must be an MM-DiT policy, e.g. "
                "backbone::MMDiTBackbone<backbone::QKNorm::AsStored>");
  static_assert(requires { typename P::autoencoder_type::format_type; },
                "BasicSD3Generator: the pipeline's autoencoder slot must be autoencoder::FrozenKL<Format> (the "
                "released KL autoencoder with its latent format)");
  static_assert(generator_detail::ScheduleWithShift<typename P::sampler_type::schedule_type>,
                "BasicSD3Generator: the sampler slot's schedule must take the shift as its first value, e.g. "
                "sampling::ReferenceSchedule");
  using format_type = typename P::autoencoder_type::format_type;
  using schedule_type = typename P::sampler_type::schedule_type;

 public:
  using pipeline_type = P;
  using method_choice = sampling::MethodChoice<Methods>;

  BasicSD3Generator(SD3ModelFiles files, SD3GeneratorOptions o = {}) : files_(std::move(files)), o_(o) {
    if (o_.no_t5) files_.t5.clear();
    defaults_ = files_.defaults;
    if (!o_.release_stages) {
      text();
      mmdit();
      if (!files_.controlnet.empty()) controlnet();
      vae();
    }
  }
  const SD3ModelFiles& files() const { return files_; }
  const SD3Defaults& defaults() const { return defaults_; }

  // The parts, for the LoRA fine-tuner (training/lora_trainer.hpp): the MM-DiT (in the options'
  // dtype, with the options' LoRAs merged), the text conditioning of prompts (context, pooled) and
  // the VAE's latents of images (B, 3, H, W) in [-1, 1]: the posterior mean, scaled and shifted
  // as the MM-DiT sees it (SD3LatentFormat), float32.
  backbone::MMDiT& backbone() { return mmdit(); }
  encoders::TextFeatures encode_text(const std::vector<std::string>& texts) {
    torch::NoGradGuard no_grad;
    return encode_text_stages(texts);
  }
  torch::Tensor encode_images(const torch::Tensor& images) {
    torch::NoGradGuard no_grad;
    auto& ae = vae();
    const auto img = images.to(o_.device, o_.dtype);
    const auto mean = (o_.vae_tiling ? autoencoder::encode_tiled(ae, img) : ae->encode(img)).mean;
    return format_type{}.process_in(mean.to(torch::kFloat32)).to(torch::kCPU);
  }
  // Per-encoder dropout of features encode_text gave (sampling::drop_sd3_encoders).
  void apply_dropout(torch::Tensor& context, torch::Tensor& pooled, double rate, at::Generator& gen) const {
    sampling::drop_sd3_encoders(context, pooled, text_shape_, rate, gen);
  }
  int pixel_multiple() { return 8 * static_cast<int>(mmdit()->config().patch); }
  int native_resolution() const { return defaults_.width; }
  // SD3 was trained at 1024² with the timesteps shifted by 3 (SD3 paper, section 5.3.2), whatever
  // shift the reference samples a model with (sd3_medium: 1).
  double training_shift() const { return 3.0; }

  GenerateSettings settings(const GenerateRequest& r) const { return resolve(defaults_, r); }

  // What a request resolves to with a model's defaults (no weights needed: `generate --dry-run`).
  static GenerateSettings resolve(const SD3Defaults& d, const GenerateRequest& r) {
    GenerateSettings s;
    s.width = r.width > 0 ? r.width : d.width;
    s.height = r.height > 0 ? r.height : d.height;
    s.steps = r.steps > 0 ? r.steps : d.steps;
    s.cfg = r.cfg.value_or(d.cfg);
    s.shift = r.shift.value_or(d.shift);
    s.sampler = r.sampler.empty() ? d.sampler : r.sampler;
    [[maybe_unused]] const method_choice known(s.sampler);  // an unknown name fails here, also for --dry-run
    // Skip-layer guidance as the reference runs it: off unless asked for; asked for, the model's
    // preset, each value replaceable.
    const auto preset = d.skip_layer_preset;
    if (r.skip_layer_cfg && !preset)
      throw InputError("generate: the reference has no skip-layer preset for this model (" +
                       (d.config.empty() ? std::string("unknown model") : d.config) +
                       "; only sd3.5_medium has one): give --slg-scale and --skip-layers instead");
    const SkipLayerPreset p = preset.value_or(SkipLayerPreset{});
    s.slg_scale = r.slg_scale.value_or(r.skip_layer_cfg ? p.scale : 0.0);
    s.skip_layers = r.skip_layers.empty() ? p.layers : r.skip_layers;
    s.slg_start = r.slg_start.value_or(p.start);
    s.slg_end = r.slg_end.value_or(p.end);
    return s;
  }

  // Images (B, 3, H, W) in [-1, 1], float32 on the CPU.
  torch::Tensor generate(const GenerateRequest& r) { return decode(sample(r)); }

  // The sampled latents (B, 16, H/8, W/8) as the VAE's decoder takes them (SD3's latent format
  // undone: what the reference's do_sampling returns), float32 on the compute device.
  torch::Tensor sample(const GenerateRequest& r) {
    const auto s = settings(r);
    if (r.prompts.empty()) throw InputError("generate: no prompt");
    if (s.width % 16 || s.height % 16 || s.width <= 0 || s.height <= 0)
      throw InputError("generate: width and height must be positive multiples of 16, got " + std::to_string(s.width) + "x" +
                       std::to_string(s.height));
    if (s.steps < 1) throw InputError("generate: steps must be at least 1");
    const method_choice method(s.sampler);  // chosen once, before any work
    torch::NoGradGuard no_grad;
    const auto n = static_cast<std::int64_t>(r.prompts.size());
    // 1. Text: prompts and the negative prompt in one batch.
    std::vector<std::string> texts = r.prompts;
    texts.push_back(r.negative);
    const bool controlled = !files_.controlnet.empty();
    if (controlled && !r.control_image)
      throw InputError("generate: the ControlNet " + files_.controlnet + " needs a control image (--control-image)");
    if (!controlled && r.control_image) throw InputError("generate: a control image needs a ControlNet (--controlnet)");
    const auto feats = encode_text_stages(texts);
    const auto dev = o_.device;
    auto ctx = feats.context.to(dev), pooled = feats.pooled.to(dev);
    const sampling::Conditioning cond{ctx.narrow(0, 0, n), pooled.narrow(0, 0, n)};
    const sampling::Conditioning uncond{ctx.narrow(0, n, 1).expand({n, -1, -1}), pooled.narrow(0, n, 1).expand({n, -1})};
    // 2. MM-DiT sampling.
    auto& model = mmdit();
    for (int l : s.skip_layers)
      if (s.slg_scale != 0 && (l < 0 || l >= model->config().depth))
        throw InputError("generate: skip layer " + std::to_string(l) + " does not exist (depth " + std::to_string(model->config().depth) + ")");
    const std::int64_t f = 8, h = s.height / f, w = s.width / f;
    auto noise = sampling::initial_noise(n, 16, h, w, r.seed);
    noise = noise.to(dev);
    auto sigmas = schedule_type{s.shift}.sigmas(s.steps);
    torch::Tensor x = noise;
    const format_type fmt;
    // Images to latents: the posterior's mean, or draws from one generator (init image first).
    std::optional<at::Generator> draws;
    if (r.posterior_seed) draws = at::detail::createCPUGenerator(*r.posterior_seed);
    auto encode = [&](const torch::Tensor& img) {
      auto& ae = vae();
      const auto posterior = o_.vae_tiling ? autoencoder::encode_tiled(ae, img) : ae->encode(img);
      auto encoded = posterior.mean;  // or mean + std * eps, as the reference's SDVAE.encode
      if (draws) encoded = posterior.sample(torch::randn(posterior.mean.sizes(), *draws, torch::kFloat32).to(posterior.mean.options()));
      return fmt.process_in(encoded.to(torch::kFloat32));
    };
    if (r.init_image.defined()) {
      auto img = r.init_image.to(dev, o_.dtype);
      if (img.size(2) != s.height || img.size(3) != s.width)
        throw InputError("generate: the init image is " + std::to_string(img.size(3)) + "x" + std::to_string(img.size(2)) +
                         ", the request " + std::to_string(s.width) + "x" + std::to_string(s.height));
      auto latent = encode(img);
      if (latent.size(0) == 1 && n > 1) latent = latent.expand({n, -1, -1, -1});
      const auto start = sampling::img2img_start(sigmas, latent, noise, r.strength);
      sigmas = start.sigmas;
      x = start.x;
    }
    const auto dtype = o_.dtype;
    torch::Tensor control;  // the encoded control image, (1, 16, h, w) in the compute dtype
    if (controlled) {
      auto& cn = controlnet();
      control = encode(generator_detail::control_pixels(*r.control_image, s.width, s.height, cn->config()).to(dev, dtype)).to(dtype);
    }
    sampling::FlowModel fm = [&](const torch::Tensor& xx, const torch::Tensor& t, const torch::Tensor& y,
                                 const torch::Tensor& c, const std::set<int>& skip) {
      // The ControlNet runs beside the guided passes, not the skip-layer one (the reference's
      // SkipLayerCFGDenoiser calls the model without it), with the control latent for each row.
      const auto xd = xx.to(dtype), yd = y.to(dtype);
      std::vector<torch::Tensor> residuals;
      if (control.defined() && skip.empty())
        residuals = (*controlnet_)->forward(model, xd, t, yd, control.expand({xx.size(0), -1, -1, -1}), r.control_strength);
      return model->forward(xd, t, yd, c.to(dtype), skip, nullptr, residuals).to(torch::kFloat32);
    };
    sampling::Guidance g;
    g.cfg_scale = s.cfg;
    g.slg_scale = s.slg_scale;
    g.skip_layers = std::set<int>(s.skip_layers.begin(), s.skip_layers.end());
    g.slg_start = s.slg_start;
    g.slg_end = s.slg_end;
    const auto den = sampling::guided_flow_denoiser(fm, cond, uncond, g, s.steps);
    if (r.on_sampling_start) r.on_sampling_start();
    const auto res = method.sample(den, x, sigmas, r.on_step);
    if (o_.release_stages) mmdit_.reset(), controlnet_.reset();
    return fmt.process_out(res.x);
  }

  // Latents from sample() to images (B, 3, H, W) in [-1, 1], float32 on the CPU.
  torch::Tensor decode(const torch::Tensor& latents) {
    torch::NoGradGuard no_grad;
    auto& ae = vae();
    const auto z = latents.to(o_.device, o_.dtype);
    auto images = o_.vae_tiling ? autoencoder::decode_tiled(ae, z) : ae->decode(z);
    if (o_.release_stages) vae_.reset();
    return images.to(torch::kCPU, torch::kFloat32).clamp(-1, 1);
  }

 private:
  // With release_stages the encoders are loaded one at a time (T5-XXL alone is 19 GB in float32),
  // each dropped after use; otherwise the whole stack stays loaded.
  encoders::TextFeatures encode_text_stages(const std::vector<std::string>& texts) {
    if (!o_.release_stages) {
      text_shape_ = text().shape();
      return text().encode(texts);
    }
    const auto to = text_options();
    sampling::EncoderOutputs parts;
    // One encoder per pass: only that field of the sources is set.
    using Source = std::string encoders::SD3TextSources::*;
    using File = std::string SD3ModelFiles::*;
    for (const auto& [field, file] : {std::pair<Source, File>{&encoders::SD3TextSources::clip_l, &SD3ModelFiles::clip_l},
                                      {&encoders::SD3TextSources::clip_g, &SD3ModelFiles::clip_g},
                                      {&encoders::SD3TextSources::t5, &SD3ModelFiles::t5}}) {
      if ((files_.*file).empty()) continue;
      encoders::SD3TextSources src;
      src.tokenizers = files_.tokenizers;
      src.*field = files_.*file;
      const auto p = encoders::SD3TextConditioning::load(src, to).encode_parts(texts);
      if (p.clip_l_hidden) parts.clip_l_hidden = p.clip_l_hidden, parts.clip_l_pooled = p.clip_l_pooled;
      if (p.clip_g_hidden) parts.clip_g_hidden = p.clip_g_hidden, parts.clip_g_pooled = p.clip_g_pooled;
      if (p.t5_hidden) parts.t5_hidden = p.t5_hidden;
    }
    auto shape = to.shape;
    if (parts.clip_l_hidden) shape.clip_l_width = parts.clip_l_hidden->size(2);
    if (parts.clip_g_hidden) shape.clip_g_width = parts.clip_g_hidden->size(2);
    shape.t5_tokens = parts.t5_hidden ? parts.t5_hidden->size(1) : (o_.t5_length > 0 ? o_.t5_length : 77);
    text_shape_ = shape;
    const auto c = sampling::assemble_sd3_conditioning(parts, static_cast<std::int64_t>(texts.size()), shape);
    return {c.context, c.pooled};
  }
  encoders::SD3TextConditioning& text() {
    if (!text_) {
      encoders::SD3TextSources src{files_.clip_l, files_.clip_g, files_.t5, files_.tokenizers, "", ""};
      text_.emplace(encoders::SD3TextConditioning::load(src, text_options()));
    }
    return *text_;
  }
  encoders::SD3TextOptions text_options() const {
    {
      encoders::SD3TextOptions to;
      to.t5_length = o_.t5_length;
      to.dtype = o_.text_dtype;
      // Absent encoders leave zeros of the widths the MM-DiT expects: its context width, and its
      // pooled width less the CLIP that is present (SD3's 768 + 1280 = 2048 when both are absent).
      io::SafetensorsFile mm(files_.mmdit);
      const auto mc = backbone::detect_mmdit_config(mm.tensors(), files_.mmdit);
      to.shape.t5_width = mc.context_in;
      const auto wl = generator_detail::clip_width(files_.clip_l, "clip_l"), wg = generator_detail::clip_width(files_.clip_g, "clip_g");
      if (wl > 0) to.shape.clip_l_width = wl;
      if (wg > 0) to.shape.clip_g_width = wg;
      if (wl <= 0 && wg > 0) to.shape.clip_l_width = mc.adm_in - wg;
      if (wg <= 0 && wl > 0) to.shape.clip_g_width = mc.adm_in - wl;
      if (wl <= 0 && wg <= 0 && mc.adm_in != 2048) {
        to.shape.clip_l_width = mc.adm_in * 3 / 8;  // SD3's 768 : 1280 split
        to.shape.clip_g_width = mc.adm_in - to.shape.clip_l_width;
      }
      return to;
    }
  }
  // The MM-DiT's and the ControlNet's load options: the generator's dtype, device and weight layout.
  template <class LoadOptions>
  LoadOptions load_options() const {
    LoadOptions lo;
    lo.dtype = o_.dtype;
    lo.device = o_.device;
    lo.weight_layout = o_.weight_layout;
    return lo;
  }
  backbone::MMDiT& mmdit() {
    if (!mmdit_) {
      mmdit_.emplace(io::load_mmdit(files_.mmdit, load_options<io::MMDiTLoadOptions>()));
      if constexpr (requires { P::backbone_type::qk_norm; }) {
        if constexpr (P::backbone_type::qk_norm != backbone::QKNorm::AsStored) {
          const bool want = P::backbone_type::qk_norm == backbone::QKNorm::RMS;
          if ((*mmdit_)->config().qk_norm != want)
            throw InputError(files_.mmdit + ": the MM-DiT has " + ((*mmdit_)->config().qk_norm ? "" : "no ") +
                             "QK-norm but the generator's pipeline type says " + std::string(P::backbone_type::name) +
                             "; pipeline::SD3Inference (QKNorm::AsStored) takes any released model");
        }
      }
      for (const auto& l : o_.loras) io::merge_lora(*mmdit_, io::read_lora(l.path, (*mmdit_)->config()), l.strength);
      (*mmdit_)->to(o_.device);
      (*mmdit_)->eval();
    }
    return *mmdit_;
  }
  backbone::ControlNet& controlnet() {
    if (!controlnet_)
      controlnet_.emplace(io::load_controlnet(files_.controlnet, mmdit()->config(), load_options<io::ControlNetLoadOptions>()));
    return *controlnet_;
  }
  autoencoder::KLAutoencoder& vae() {
    if (!vae_) {
      vae_.emplace(autoencoder::load_autoencoder(files_.vae, o_.dtype));
      (*vae_)->to(o_.device);
      (*vae_)->eval();
    }
    return *vae_;
  }

  SD3ModelFiles files_;
  SD3GeneratorOptions o_;
  SD3Defaults defaults_;
  std::optional<encoders::SD3TextConditioning> text_;
  sampling::SD3ConditioningShape text_shape_;  // of the last encode_text_stages
  std::optional<backbone::MMDiT> mmdit_;
  std::optional<backbone::ControlNet> controlnet_;
  std::optional<autoencoder::KLAutoencoder> vae_;
};

using SD3Generator = BasicSD3Generator<SD3Inference>;

}  // namespace diffuse::pipeline
