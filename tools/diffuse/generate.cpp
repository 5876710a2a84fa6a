// `diffuse generate`: prompt to PNG with SD3 / SD3.5 checkpoints (pipeline/sd3_generator.hpp).
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/cuda.h>

#include "command.hpp"
#include "inputs.hpp"
#include "progress.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/io/image_file.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/pipeline/images.hpp"
#include "diffuse/pipeline/sd3_generator.hpp"
#include "diffuse/version.hpp"

namespace diffuse::cli {
namespace {

struct GenerateOptions {
  std::string model, clip_l, clip_g, t5, vae, tokenizers, negative, sampler, init_img, out = "out.png", save_tensors;
  std::string controlnet, control_image;
  double control_strength = 1.0;
  std::string dtype = "bf16", device = "cpu", weight_layout = "auto";
  std::vector<std::string> prompts, loras;
  std::vector<int> skip_layers;
  int width = 0, height = 0, steps = 0, batch = 1, threads = 0, t5_length = 77;
  double cfg = -1, shift = -1, slg_scale = -1, strength = 0.8, slg_start = -1, slg_end = -1;
  std::uint64_t seed = 42;
  std::int64_t posterior_seed = -1;
  bool no_t5 = false, vae_tiling = false, low_memory = false, skip_layer_cfg = false, dry_run = false;
};

// Where a model part was found and how its keys are laid out (headers only, no weights read).
nlohmann::json part_json(const std::string& path, const std::string& model, const std::string& given, io::ComponentKind kind) {
  if (path.empty()) return {{"path", nullptr}, {"form", "absent (zeros in its place)"}};
  namespace fs = std::filesystem;
  nlohmann::json j{{"path", path}};
  if (!given.empty()) j["form"] = "given";
  else if (fs::is_directory(model)) j["form"] = "diffusers folder";
  else if (path == model) j["form"] = "in the model file";
  io::WeightFiles f(path);
  j["tensors"] = f.tensors().size();
  for (const auto& c : io::detect_components(f.tensors()))
    if (c.kind == kind) {
      j["layout"] = std::string(io::to_string(c.layout));
      j["prefix"] = c.prefix;
      j["family"] = c.family;
      break;
    }
  return j;
}

// The ControlNet as read from its header and the MM-DiT's: its form, the control image's
// preprocessing, and the CONFIGS row its name picks.
nlohmann::json controlnet_json(const GenerateOptions& o, const pipeline::SD3ModelFiles& files) {
  io::SafetensorsFile mm(files.mmdit);
  const auto base = backbone::detect_mmdit_config(mm.tensors(), files.mmdit);
  const auto c = backbone::detect_controlnet_config(io::SafetensorsFile(files.controlnet), base);
  const bool pooled = c.form == backbone::ControlNetForm::PooledText8B;
  nlohmann::json j{{"path", files.controlnet},
                   {"blocks", c.layers},
                   {"joint_blocks_per_block", c.interval},
                   {"form", pooled ? "8B: the pooled text and the MM-DiT's patch embedding, blocks in sequence"
                                   : "2B: the MM-DiT's embedded pooled text and its own patch embedding, blocks side by side"},
                   {"control_type", {{"value", c.control_type},
                                     {"name", backbone::control_type_name(c.control_type)},
                                     {"from", c.control_type_stored ? "the file's control_type tensor" : "absent: 0, as the reference"}}},
                   {"control_image", o.control_image},
                   {"strength", o.control_strength}};
  j["preprocessing"] = backbone::uses_canny_scaling(c) ? "bytes / 255, then x * 255 * 0.5 + 0.5 (the reference's canny)" : "bytes / 255, then 2x - 1";
  j["config"] = files.defaults.controlnet_config.empty() ? nlohmann::json(nullptr) : nlohmann::json(files.defaults.controlnet_config);
  return j;
}

// `--dry-run`: the resolved settings and where each value comes from, as JSON on stdout.
nlohmann::json dry_run_json(const GenerateOptions& o, const pipeline::SD3ModelFiles& files, const pipeline::GenerateRequest& r,
                            const pipeline::GenerateSettings& s) {
  using io::ComponentKind;
  const auto& d = files.defaults;
  const auto from = [&](bool given, const std::string& option) { return given ? option : d.source(); };
  auto value = [](auto v, const std::string& src) { return nlohmann::json{{"value", v}, {"from", src}}; };
  nlohmann::json j;
  j["model"] = o.model;
  j["family"] = files.family;
  j["defaults"] = {{"config", d.config.empty() ? nlohmann::json(nullptr) : nlohmann::json(d.config)},
                   {"identified_by", d.identified_by}};
  if (!d.note.empty()) j["defaults"]["note"] = d.note;
  j["files"] = {{"mmdit", part_json(files.mmdit, o.model, "", ComponentKind::MMDiT)},
                {"vae", part_json(files.vae, o.model, o.vae, ComponentKind::Autoencoder)},
                {"clip_l", part_json(files.clip_l, o.model, o.clip_l, ComponentKind::CLIPText)},
                {"clip_g", part_json(files.clip_g, o.model, o.clip_g, ComponentKind::CLIPText)},
                {"t5", part_json(files.t5, o.model, o.t5, ComponentKind::T5Encoder)},
                {"tokenizers", files.tokenizers.empty() ? nlohmann::json(nullptr) : nlohmann::json(files.tokenizers)}};
  const std::string size_from = !o.init_img.empty()        ? "--init-img's size"
                                : !o.control_image.empty() ? "--control-image's size"
                                                           : "sd3_infer.py WIDTH / HEIGHT";
  j["settings"] = {{"width", value(s.width, o.width > 0 ? "--width" : size_from)},
                   {"height", value(s.height, o.height > 0 ? "--height" : size_from)},
                   {"steps", value(s.steps, from(o.steps > 0, "--steps"))},
                   {"cfg", value(s.cfg, from(o.cfg >= 0, "--cfg"))},
                   {"sampler", value(s.sampler, from(!o.sampler.empty(), "--sampler"))},
                   {"shift", value(s.shift, from(o.shift >= 0, "--shift"))},
                   {"seed", value(r.seed, "--seed (image i uses seed + i)")}};
  nlohmann::json slg{{"scale", s.slg_scale}};
  if (s.slg_scale != 0) {
    slg["layers"] = s.skip_layers, slg["start"] = s.slg_start, slg["end"] = s.slg_end;
    slg["from"] = o.slg_scale >= 0 ? "--slg-scale" : "--skip-layer-cfg: " + d.model_source();
  } else {
    slg["from"] = o.slg_scale >= 0 ? "--slg-scale"
                                   : "off, as in the reference unless asked for (--skip-layer-cfg" +
                                         std::string(d.skip_layer_preset ? " turns on this model's preset)" : "; this model has no preset)");
  }
  j["settings"]["skip_layer_guidance"] = slg;
  if (!files.controlnet.empty()) j["controlnet"] = controlnet_json(o, files);
  return j;
}

// Peak resident memory of this process (VmHWM), in bytes; 0 where /proc lacks it.
std::uint64_t peak_rss() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

std::string numbered(const std::string& out, std::size_t i, std::size_t n) {
  if (n == 1) return out;
  const std::filesystem::path p(out);
  char idx[16];
  std::snprintf(idx, sizeof idx, "_%03zu", i);
  return (p.parent_path() / (p.stem().string() + idx + p.extension().string())).string();
}

void run_generate(const GenerateOptions& o) {
  configure_threads(o.threads);
  if (o.batch < 1) throw InputError("--batch must be at least 1");
  pipeline::SD3GeneratorOptions go;
  if (o.dtype == "bf16") go.dtype = torch::kBFloat16;
  else if (o.dtype == "f16") go.dtype = torch::kFloat16;
  else if (o.dtype == "f32") go.dtype = torch::kFloat32;
  else throw InputError("--dtype must be bf16, f16 or f32, got '" + o.dtype + "'");
  if (o.device == "cuda") {
    if (!torch::cuda::is_available()) throw InputError("--device cuda: this LibTorch has no CUDA device (build against LibTorch 2.x with CUDA)");
    go.device = torch::Device(torch::kCUDA);
  } else if (o.device != "cpu") {
    throw InputError("--device must be cpu or cuda, got '" + o.device + "'");
  }
  go.weight_layout = parse_weight_layout(o.weight_layout);
  go.no_t5 = o.no_t5;
  // One request a run: each stage's weights go as soon as it is done (nothing is loaded twice), so
  // the peak follows the largest stage. --low-memory also decodes the VAE in tiles.
  go.vae_tiling = o.vae_tiling || o.low_memory;
  go.release_stages = true;
  go.t5_length = o.t5_length;
  std::string lora_text;  // for the PNG: file name:strength, in order
  for (const auto& arg : o.loras) {
    const auto l = parse_lora_arg(arg);
    go.loras.push_back({l.path, l.strength});
    lora_text += (lora_text.empty() ? "" : ", ") + std::filesystem::path(l.path).filename().string() + ":" +
                 std::to_string(l.strength);
    std::cerr << "LoRA " << l.path << " at strength " << l.strength << "\n";
  }
  pipeline::SD3ModelFiles given;
  given.clip_l = o.clip_l;
  given.clip_g = o.clip_g;
  given.t5 = o.t5;
  given.vae = o.vae;
  given.tokenizers = o.tokenizers;
  given.controlnet = o.controlnet;
  if (!o.controlnet.empty() && o.control_image.empty())
    throw InputError("--controlnet needs --control-image (the image that steers it)");
  if (o.controlnet.empty() && !o.control_image.empty()) throw InputError("--control-image needs --controlnet");
  auto files = pipeline::find_sd3_model(o.model, given);
  if (o.no_t5) files.t5.clear();
  std::cerr << "model: " << files.family << " (MM-DiT " << files.mmdit << "; VAE " << files.vae << "; CLIP-L "
            << (files.clip_l.empty() ? "absent" : files.clip_l) << "; CLIP-G " << (files.clip_g.empty() ? "absent" : files.clip_g)
            << "; T5 " << (files.t5.empty() || o.no_t5 ? "absent" : files.t5) << ")\n";

  pipeline::GenerateRequest r;
  for (const auto& p : o.prompts)
    for (int b = 0; b < o.batch; ++b) r.prompts.push_back(p);
  r.negative = o.negative;
  r.width = o.width;
  r.height = o.height;
  r.steps = o.steps;
  if (o.cfg >= 0) r.cfg = o.cfg;
  if (o.shift >= 0) r.shift = o.shift;
  if (o.slg_scale >= 0) r.slg_scale = o.slg_scale;
  r.skip_layer_cfg = o.skip_layer_cfg;
  r.skip_layers = o.skip_layers;
  if (o.slg_start >= 0) r.slg_start = o.slg_start;
  if (o.slg_end >= 0) r.slg_end = o.slg_end;
  r.sampler = o.sampler;
  r.seed = o.seed;
  r.strength = o.strength;
  if (o.posterior_seed >= 0) r.posterior_seed = static_cast<std::uint64_t>(o.posterior_seed);
  if (!o.init_img.empty()) {
    const auto img = io::read_png(o.init_img);
    if (!o.dry_run) r.init_image = pipeline::from_rgb(img).unsqueeze(0);
    if (r.width == 0) r.width = static_cast<int>(img.shape(1));
    if (r.height == 0) r.height = static_cast<int>(img.shape(0));
    // Another size given: resized as the reference resizes it (Lanczos, as Pillow).
    if (!o.dry_run && (r.width != static_cast<int>(img.shape(1)) || r.height != static_cast<int>(img.shape(0))) &&
        r.width > 0 && r.height > 0 && r.width % 16 == 0 && r.height % 16 == 0)
      r.init_image = pipeline::from_rgb(io::lanczos_resize(img, r.width, r.height)).unsqueeze(0);
  }
  if (!o.control_image.empty()) {
    const auto img = io::read_image(o.control_image);
    if (r.width == 0) r.width = static_cast<int>(img.shape(1));
    if (r.height == 0) r.height = static_cast<int>(img.shape(0));
    r.control_image = img;
    r.control_strength = o.control_strength;
  }
  if (!files.defaults.note.empty()) std::cerr << "defaults: " << files.defaults.note << "\n";
  if (o.dry_run) {
    // The settings are resolved from the files' headers alone: no weights are read.
    const auto s = pipeline::SD3Generator::resolve(files.defaults, r);
    std::cout << dry_run_json(o, files, r, s).dump(2) << "\n";
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  pipeline::SD3Generator gen(files, go);
  const auto s = gen.settings(r);
  if (s.width % 16 || s.height % 16)
    throw InputError("--width and --height must be multiples of 16, got " + std::to_string(s.width) + "x" + std::to_string(s.height));
  std::cerr << r.prompts.size() << " image(s) "
            << s.width << "x" << s.height << ", " << s.steps << " steps, " << s.sampler << ", CFG " << s.cfg << ", shift "
            << s.shift << (s.slg_scale != 0 ? ", SLG " + std::to_string(s.slg_scale) : std::string()) << ", " << o.dtype
            << " on " << o.device << "\n";
  Progress progress("generate", s.steps);
  std::vector<std::chrono::steady_clock::time_point> step_ends;  // the mean over all steps hides a slow first one
  auto sampling_start = t0;  // the stages load as they are needed: text encoders, MM-DiT, VAE
  r.on_sampling_start = [&] {
    sampling_start = std::chrono::steady_clock::now();
    std::cerr << "sampling starts after " << std::chrono::duration<double>(sampling_start - t0).count()
              << " s (text encoders and MM-DiT loaded, text encoded)\n";
    progress.restart();  // s/it and the ETA are the sampling's, not the load's
  };
  r.on_step = [&](const sampling::StepInfo& info) {
    step_ends.push_back(std::chrono::steady_clock::now());
    progress.update(info.step + 1, "sigma " + std::to_string(info.sigma));
    return true;
  };
  const auto latents = gen.sample(r);
  const auto images = gen.decode(latents);
  const auto t2 = std::chrono::steady_clock::now();
  if (!o.save_tensors.empty()) {
    io::save_safetensors(o.save_tensors, {{"latent", latents.to(torch::kCPU, torch::kFloat32).contiguous()}, {"image", images.contiguous()}});
    std::cerr << "wrote " << o.save_tensors << " (latent, image: float32)\n";
  }
  const std::string model_name = files.family != "custom" ? files.family : std::filesystem::path(files.mmdit).stem().string();
  for (std::size_t i = 0; i < r.prompts.size(); ++i) {
    const auto text = pipeline::parameters_text(r.prompts[i], r.negative, s, r.seed + i, model_name,
                                                std::string("diffuse ") + DIFFUSE_VERSION_STRING);
    const auto path = numbered(o.out, i, r.prompts.size());
    std::map<std::string, std::string> chunks{{"parameters", text}};
    if (!lora_text.empty()) chunks["loras"] = lora_text;
    if (!o.controlnet.empty())
      chunks["controlnet"] = std::filesystem::path(o.controlnet).filename().string() + ":" + std::to_string(o.control_strength) +
                             " with " + std::filesystem::path(o.control_image).filename().string();
    io::write_png(path, pipeline::to_rgb(images[static_cast<std::int64_t>(i)], io::Quantize::Truncate), chunks);
    std::cerr << "wrote " << path << "\n";
  }
  const auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  if (step_ends.empty()) step_ends.push_back(t2);
  std::cerr << "generated in " << secs(t0, t2) << " s: until sampling " << secs(t0, sampling_start) << " s, first step "
            << secs(sampling_start, step_ends.front()) << " s";
  if (step_ends.size() > 1)
    std::cerr << ", later steps " << secs(step_ends.front(), step_ends.back()) / static_cast<double>(step_ends.size() - 1)
              << " s/step";
  std::cerr << ", decode " << secs(step_ends.back(), t2) << " s; peak RSS " << peak_rss() / (1024.0 * 1024 * 1024) << " GiB\n";
}

}  // namespace

void add_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Text to image with SD3 / SD3.5 checkpoints (all-in-one file, MM-DiT + separate files, or diffusers folder)");
  auto o = std::make_shared<GenerateOptions>();
  cmd->add_option("--model", o->model, "all-in-one .safetensors, an MM-DiT file, or a diffusers model folder")->required();
  cmd->add_option("--prompt", o->prompts, "prompt (repeat for several)")->required();
  cmd->add_option("--negative", o->negative, "negative prompt (default: the empty prompt, as the reference)");
  cmd->add_option("--width", o->width, "image width, a multiple of 16 (default: the family's, 1024)");
  cmd->add_option("--height", o->height, "image height, a multiple of 16 (default: 1024)");
  cmd->add_option("--steps", o->steps, "sampling steps (default: the reference's for the model, see --dry-run)");
  cmd->add_option("--cfg", o->cfg, "classifier-free guidance scale (default: the reference's for the model)");
  cmd->add_option("--sampler", o->sampler, "euler, heun or dpmpp_2m (default: the reference's for the model)");
  cmd->add_option("--shift", o->shift, "timestep shift (default: the reference's for the model)");
  cmd->add_option("--seed", o->seed, "seed; image i uses seed + i")->capture_default_str();
  cmd->add_option("--batch", o->batch, "images per prompt")->capture_default_str();
  cmd->add_flag("--skip-layer-cfg", o->skip_layer_cfg, "skip-layer guidance with the model's preset (SD3.5-medium: scale 2.5, layers 7,8,9, 1%-20% of the steps)");
  cmd->add_option("--slg-scale", o->slg_scale, "skip-layer guidance scale (default: 0, or the preset's with --skip-layer-cfg)");
  cmd->add_option("--skip-layers", o->skip_layers, "blocks skipped for SLG (default 7,8,9)")->delimiter(',');
  cmd->add_option("--slg-start", o->slg_start, "SLG active from this fraction of the steps (default 0.01)");
  cmd->add_option("--slg-end", o->slg_end, "SLG active until this fraction of the steps (default 0.2)");
  cmd->add_option("--save-tensors", o->save_tensors, "also write the final latent and the image as float32 tensors (latent, image) to this .safetensors file");
  cmd->add_option("--posterior-seed", o->posterior_seed, "img2img: encode the init image as a draw from the VAE posterior with this seed, as the reference draws (default: its mean)");
  cmd->add_flag("--dry-run", o->dry_run, "print the resolved settings and where each comes from as JSON; read no weights");
  cmd->add_option("--init-img", o->init_img, "img2img: start from this PNG (another --width/--height: resized as the reference, Lanczos)");
  cmd->add_option("--controlnet", o->controlnet, "an SD3 ControlNet file (SD3.5-large: sd3.5_large_controlnet_blur/canny/depth; its name picks the reference's settings, see --dry-run)");
  cmd->add_option("--control-image", o->control_image, "the ControlNet's control image (PNG, JPEG, BMP or WebP; resized to the output size as the reference, Lanczos)");
  cmd->add_option("--control-strength", o->control_strength, "scale of the ControlNet's residuals (the reference: 1)")->capture_default_str();
  cmd->add_option("--strength", o->strength, "img2img: how much to change (0, 1]")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "MM-DiT and VAE dtype: bf16, f16 or f32")->capture_default_str();
  cmd->add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--weight-layout", o->weight_layout, weight_layout_help)->capture_default_str();
  cmd->add_option("--lora", o->loras, lora_help);
  cmd->add_flag("--vae-tiling", o->vae_tiling, "decode (and encode) the VAE in overlapping tiles");
  cmd->add_flag("--low-memory", o->low_memory, "also decode (and encode) the VAE in tiles: less memory at large sizes, seams blended (each stage's weights are always released after use)");
  cmd->add_option("--clip-l", o->clip_l, "CLIP-L weights (when not in the model file)");
  cmd->add_option("--clip-g", o->clip_g, "CLIP-G weights");
  cmd->add_option("--t5", o->t5, "T5-XXL weights");
  cmd->add_option("--vae", o->vae, "VAE weights");
  cmd->add_option("--tokenizers", o->tokenizers, "folder with bpe_simple_vocab_16e6.txt.gz and spiece.model (or diffusers tokenizer/, tokenizer_3/)");
  cmd->add_flag("--no-t5", o->no_t5, "skip T5 (zeros in its place)");
  cmd->add_option("--t5-length", o->t5_length, "T5 tokens: 77, 0 (as the reference) or N")->capture_default_str();
  cmd->add_option("--out", o->out, "output PNG (several images: _000, _001, ... before the extension)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0: all)")->capture_default_str();
  cmd->callback([o] { run_generate(*o); });
}

}  // namespace diffuse::cli
