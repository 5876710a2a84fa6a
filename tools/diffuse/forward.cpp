// `diffuse forward`: runs a backbone on tensors named as in the reference test vectors and writes
// its output. MM-DiT: inputs x, t (or sigma, t = 1000 sigma), y, context -> out.
#include <iostream>
#include <memory>
#include <set>
#include <string>

#include "command.hpp"
#include "inputs.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/autoencoder/latent_format.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"

namespace diffuse::cli {
namespace {

struct ForwardOptions {
  std::string weights, config, inputs, out, dtype = "f32";
  std::vector<int> skip_layers;
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

void run_forward(const ForwardOptions& o) {
  configure_threads(o.threads);
  const auto dtype = parse_dtype(o.dtype);
  io::SafetensorsFile weights(o.weights);
  const auto components = io::detect_components(weights.tensors());
  if (components.empty()) throw InputError(o.weights + ": no known model recognised (see `diffuse inspect`)");
  const auto kind = components[0].kind;
  if (kind == io::ComponentKind::Autoencoder) return run_autoencoder(o);
  if (kind != io::ComponentKind::MMDiT)
    throw InputError(o.weights + ": holds a " + std::string(io::to_string(kind)) +
                     "; `diffuse forward` runs MM-DiT and autoencoder weights in this version");
  io::MMDiTLoadOptions lo;
  lo.dtype = dtype;
  if (!o.config.empty()) lo.config = load_config<backbone::MMDiTConfig>(o.config);
  auto model = io::load_mmdit(o.weights, lo);
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
  auto* cmd = app.add_subcommand("forward", "Run a model on named input tensors (MM-DiT: x, t or sigma, y, context; autoencoder: enc_image and/or latent)");
  auto o = std::make_shared<ForwardOptions>();
  cmd->add_option("--weights", o->weights, "MM-DiT (original or diffusers layout) or autoencoder weights")->required();
  cmd->add_option("--config", o->config, "MM-DiT config JSON (default: detected from the weights)");
  cmd->add_option("--inputs", o->inputs, "input tensors (.safetensors)")->required();
  cmd->add_option("--out", o->out, "output file (.safetensors) with the tensor 'out'")->required();
  cmd->add_option("--dtype", o->dtype, "compute dtype: f32, bf16 or f16")->capture_default_str();
  cmd->add_option("--skip-layers", o->skip_layers, "joint blocks to bypass, e.g. 7,8,9")->delimiter(',');
  cmd->add_option("--threads", o->threads, "CPU threads (0: all)")->capture_default_str();
  cmd->callback([o] { run_forward(*o); });
}

}  // namespace diffuse::cli
