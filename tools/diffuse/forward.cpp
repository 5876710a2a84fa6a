// `diffuse forward`: runs a backbone on tensors named as in the reference test vectors and writes
// its output. MM-DiT: inputs x, t (or sigma, t = 1000 sigma), y, context -> out.
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "command.hpp"
#include "inputs.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/autoencoder/latent_format.hpp"
#include "diffuse/encoders/clip_text_model.hpp"
#include "diffuse/encoders/t5_encoder.hpp"
#include "diffuse/io/lora_file.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"

namespace diffuse::cli {
namespace {

struct ForwardOptions {
  std::string weights, config, inputs, out, dtype = "f32", component, weight_layout = "auto";
  std::vector<int> skip_layers;
  std::vector<std::string> loras;  // FILE[:STRENGTH], merged into the MM-DiT in order
  int threads = 0;
};

torch::ScalarType parse_dtype(const std::string& s) {
  if (s == "f32") return torch::kFloat32;
  if (s == "bf16") return torch::kBFloat16;
  if (s == "f16") return torch::kFloat16;
  throw InputError("--dtype must be f32, bf16 or f16, got '" + s + "'");
}

// Autoencoder: `enc_image` (B, 3, H, W) in [-1, 1] is encoded (enc_moments, enc_mean, enc_logvar,
// enc_std, and with `enc_noise` enc_sample and enc_latent); `latent` (model space) is decoded through
// the SD3 latent format (latent_scaled, image, image_01) — the tensors of the reference's vae_a case.
void run_autoencoder(const ForwardOptions& o) {
  auto vae = autoencoder::load_autoencoder(o.weights);
  const auto in = io::load_safetensors(o.inputs);
  const autoencoder::SD3LatentFormat fmt;
  std::vector<std::pair<std::string, torch::Tensor>> out;
  torch::NoGradGuard no_grad;
  if (const auto* x = in.find("enc_image")) {
    const auto moments = vae->encoder->forward(x->to(torch::kFloat32));
    const auto d = vae->encode(x->to(torch::kFloat32));
    out.insert(out.end(), {{"enc_moments", moments}, {"enc_mean", d.mean}, {"enc_logvar", d.logvar}, {"enc_std", d.std()}});
    if (const auto* noise = in.find("enc_noise")) {
      const auto sample = d.sample(*noise);
      out.insert(out.end(), {{"enc_sample", sample}, {"enc_latent", fmt.process_in(sample)}});
    }
  }
  if (const auto* z = in.find("latent")) {
    const auto scaled = fmt.process_out(z->to(torch::kFloat32));
    const auto image = vae->decode(scaled);
    out.insert(out.end(), {{"latent_scaled", scaled}, {"image", image}, {"image_01", ((image + 1) / 2).clamp(0, 1)}});
  }
  if (out.empty()) throw InputError(o.inputs + ": needs 'enc_image' (to encode) or 'latent' (to decode)");
  io::save_safetensors(o.out, out, {{"weights", o.weights}, {"software", "diffuse forward"}});
  std::cerr << "wrote " << out.size() << " tensors to " << o.out << "\n";
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot read the config");
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw InputError(path + ": not JSON (" + e.what() + ")");
  }
}

// Text encoders: `tokens` (B, L) int64 -> last_hidden, hidden_layer{i} (no final norm) and
// hidden_layer{i}_ln for every layer; CLIP adds penultimate_hidden(_ln), pooled, pooled_projected
// and eos_index; T5 adds long_last_hidden when `long_tokens` is given (the reference cases' names).
void run_text_encoder(const ForwardOptions& o, const io::SafetensorsFile& f, const io::Component& c, torch::ScalarType dtype) {
  const auto in = io::load_safetensors(o.inputs);
  const auto tokens = need_tensor(in, "tokens", o.inputs).to(torch::kLong);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto f32 = [](const torch::Tensor& t) { return t.to(torch::kFloat32); };
  torch::NoGradGuard no_grad;
  auto add_layers = [&](const std::vector<torch::Tensor>& layers, auto&& norm) {
    for (std::size_t i = 0; i < layers.size(); ++i) {
      out.emplace_back("hidden_layer" + std::to_string(i), f32(layers[i]));
      out.emplace_back("hidden_layer" + std::to_string(i) + "_ln", f32(norm(layers[i])));
    }
  };
  if (c.kind == io::ComponentKind::CLIPText) {
    auto cfg = encoders::detect_clip_config(f.header(), c.prefix, f.path());
    if (o.component == "clip_g") cfg.activation = "gelu";  // bigG, whatever its size
    if (!o.config.empty()) cfg = encoders::clip_config_from_json(read_json_file(o.config), cfg);
    auto m = encoders::load_clip_text_model(f, c.prefix, cfg, dtype);
    const auto r = m->forward(tokens);
    out.insert(out.end(), {{"last_hidden", f32(r.last_hidden)},
                           {"penultimate_hidden", f32(r.penultimate())},
                           {"penultimate_hidden_ln", f32(m->final_layer_norm(r.penultimate()))},
                           {"pooled", f32(r.pooled)},
                           {"eos_index", tokens.argmax(-1)}});
    if (r.pooled_projected.defined()) out.emplace_back("pooled_projected", f32(r.pooled_projected));
    add_layers(r.layers, [&](const torch::Tensor& x) { return m->final_layer_norm(x); });
  } else {
    auto cfg = encoders::detect_t5_config(f.header(), c.prefix, f.path());
    if (!o.config.empty()) cfg = encoders::t5_config_from_json(read_json_file(o.config), cfg);
    auto m = encoders::load_t5_encoder(f, c.prefix, cfg, dtype);
    const auto r = m->forward(tokens);
    out.emplace_back("last_hidden", f32(r.last_hidden));
    add_layers(r.layers, [&](const torch::Tensor& x) { return m->final_layer_norm(x); });
    if (const auto* lt = in.find("long_tokens")) out.emplace_back("long_last_hidden", f32(m->forward(lt->to(torch::kLong)).last_hidden));
  }
  io::save_safetensors(o.out, out, {{"weights", o.weights}, {"component", c.prefix}, {"software", "diffuse forward"}});
  std::cerr << "wrote " << out.size() << " tensors (" << io::to_string(c.kind) << ") to " << o.out << "\n";
}

// The component to run: --component names one (mmdit, vae, clip_l, clip_g, t5, or a key prefix);
// otherwise the file's only one, or its MM-DiT.
io::Component pick_component(const ForwardOptions& o, const std::vector<io::Component>& cs) {
  if (cs.empty()) throw InputError(o.weights + ": no known model recognised (see `diffuse inspect`)");
  if (o.component.empty()) {
    for (const auto& c : cs)
      if (c.kind == io::ComponentKind::MMDiT) return c;
    if (cs.size() == 1) return cs[0];
    throw InputError(o.weights + ": holds several models; choose one with --component (see `diffuse inspect`)");
  }
  const std::map<std::string, io::ComponentKind> kinds{{"mmdit", io::ComponentKind::MMDiT}, {"vae", io::ComponentKind::Autoencoder},
                                                       {"clip_l", io::ComponentKind::CLIPText}, {"clip_g", io::ComponentKind::CLIPText},
                                                       {"t5", io::ComponentKind::T5Encoder}};
  std::vector<io::Component> match;
  for (const auto& c : cs) {
    const auto k = kinds.find(o.component);
    const bool by_kind = k != kinds.end() && c.kind == k->second;
    if (c.prefix == o.component || (by_kind && (o.component.rfind("clip_", 0) != 0 || cs.size() == 1 ||
                                                c.prefix.find(o.component) != std::string::npos)))
      match.push_back(c);
  }
  if (match.size() != 1)
    throw InputError(o.weights + ": --component " + o.component + " matches " + std::to_string(match.size()) +
                     " of the file's models (see `diffuse inspect`)");
  return match[0];
}

void run_forward(const ForwardOptions& o) {
  configure_threads(o.threads);
  const auto dtype = parse_dtype(o.dtype);
  const auto layout = parse_weight_layout(o.weight_layout);
  io::SafetensorsFile weights(o.weights);
  const auto component = pick_component(o, io::detect_components(weights.tensors()));
  const auto kind = component.kind;
  if (kind != io::ComponentKind::MMDiT && !o.loras.empty()) throw InputError("--lora applies to the MM-DiT only");
  if (kind == io::ComponentKind::Autoencoder) return run_autoencoder(o);
  if (kind == io::ComponentKind::CLIPText || kind == io::ComponentKind::T5Encoder)
    return run_text_encoder(o, weights, component, dtype);
  io::MMDiTLoadOptions lo;
  lo.dtype = dtype;
  lo.weight_layout = layout;
  if (!o.config.empty()) lo.config = load_config<backbone::MMDiTConfig>(o.config);
  auto model = io::load_mmdit(o.weights, lo);
  for (const auto& arg : o.loras) {
    const auto l = parse_lora_arg(arg);
    const auto lora = io::read_lora(l.path, model->config());
    io::merge_lora(model, lora, l.strength);
    std::cerr << "merged LoRA " << l.path << " (" << lora.updates.size() << " adapters, "
              << (lora.layout == io::LoraLayout::Kohya ? "kohya" : "diffusers") << " layout) at strength " << l.strength << "\n";
  }
  const auto in = io::load_safetensors(o.inputs);
  const auto x = need_tensor(in, "x", o.inputs);
  torch::Tensor t;
  if (const auto* tt = in.find("t")) t = *tt;
  else t = need_tensor(in, "sigma", o.inputs) * 1000.0;  // the model's timestep input is 1000 sigma
  const auto y = need_tensor(in, "y", o.inputs), context = need_tensor(in, "context", o.inputs);
  const std::set<int> skip(o.skip_layers.begin(), o.skip_layers.end());
  torch::NoGradGuard no_grad;
  const auto out = model->forward(x.to(dtype), t.to(torch::kFloat32), y.to(dtype), context.to(dtype), skip);
  io::save_safetensors(o.out, {{"out", out.to(torch::kFloat32)}},
                       {{"weights", o.weights}, {"dtype", o.dtype}, {"software", "diffuse forward"}});
  std::cerr << "wrote out " << out.sizes() << " to " << o.out << "\n";
}

}  // namespace

void add_forward(CLI::App& app) {
  auto* cmd = app.add_subcommand("forward", "Run a model on named input tensors (MM-DiT: x, t or sigma, y, context; autoencoder: enc_image and/or latent; CLIP / T5: tokens)");
  auto o = std::make_shared<ForwardOptions>();
  cmd->add_option("--weights", o->weights, "MM-DiT (original or diffusers layout) or autoencoder weights")->required();
  cmd->add_option("--config", o->config,
                  "config JSON (default: detected from the weights); text encoders also take a Hugging Face config.json");
  cmd->add_option("--component", o->component, "which model of a multi-model file: mmdit, vae, clip_l, clip_g, t5 or a key prefix");
  cmd->add_option("--inputs", o->inputs, "input tensors (.safetensors)")->required();
  cmd->add_option("--out", o->out, "output file (.safetensors) with the tensor 'out'")->required();
  cmd->add_option("--dtype", o->dtype, "compute dtype: f32, bf16 or f16")->capture_default_str();
  cmd->add_option("--skip-layers", o->skip_layers, "joint blocks to bypass, e.g. 7,8,9")->delimiter(',');
  cmd->add_option("--lora", o->loras, lora_help);
  cmd->add_option("--weight-layout", o->weight_layout, weight_layout_help)->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0: all)")->capture_default_str();
  cmd->callback([o] { run_forward(*o); });
}

}  // namespace diffuse::cli
