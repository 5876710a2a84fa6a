// Device check and benchmark (the prepared script scripts/gpu_check.sh runs it on the lent GPU
// machine; it runs on the CPU too).
//
//   bench_sd3_device parity DIR [--device cpu|cuda]
//     MM-DiT (mmdit_a/b/c), CLIP (clip_a/b) and T5 (t5_a) reference cases from DIR, in float32 on
//     the device: prints max|ours - ref| / max(1, max|ref|) per case (bound 2e-5).
//   bench_sd3_device bench [--device cuda] [--size 1024] [--steps 28] [--dtype bf16] [--no-vae]
//     One SD3-medium-config image with random weights: 28 Euler steps with CFG (batch 2 per step,
//     154 context tokens), then the SD3 VAE decode; prints seconds per step and per image, and the
//     same-run GEMM rate for scale.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <diffuse/autoencoder/kl_autoencoder.hpp>
#include <diffuse/autoencoder/latent_format.hpp>
#include <diffuse/backbone/mmdit.hpp>
#include <diffuse/backbone/mmdit_flops.hpp>
#include <diffuse/core/torch_compat.hpp>
#include <diffuse/encoders/clip_text_model.hpp>
#include <diffuse/encoders/t5_encoder.hpp>
#include <diffuse/io/mmdit_checkpoint.hpp>
#include <diffuse/io/safetensors.hpp>
#include <diffuse/sampling/guidance.hpp>
#include <diffuse/sampling/sampler.hpp>
#include <diffuse/sampling/schedule.hpp>

using namespace diffuse;
using clock_type = std::chrono::steady_clock;

namespace {

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

double rel_err(const torch::Tensor& ours, const torch::Tensor& ref) {
  const auto r = ref.to(torch::kCPU, torch::kFloat64), o = ours.to(torch::kCPU, torch::kFloat64);
  return (o - r).abs().max().item<double>() / std::max(1.0, r.abs().max().item<double>());
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

int parity(const std::string& dir, const torch::Device& dev) {
  torch::NoGradGuard g;
  double worst = 0;
  auto report = [&](const std::string& what, double e) {
    std::printf("  %-28s %.2e %s\n", what.c_str(), e, e <= 2e-5 ? "ok" : "FAIL");
    worst = std::max(worst, e);
  };
  for (const std::string name : {"mmdit_a", "mmdit_b", "mmdit_c"}) {
    io::MMDiTLoadOptions lo;
    lo.device = dev;
    auto m = io::load_mmdit(dir + "/" + name + ".weights.safetensors", lo);
    m->to(dev);
    const auto in = io::load_safetensors(dir + "/" + name + ".io.safetensors");
    const auto out = m->forward(in["x"].to(dev), in["t"].to(dev), in["y"].to(dev), in["context"].to(dev));
    report(name + " out", rel_err(out, in["out"]));
    if (name == "mmdit_c") report(name + " out_skip", rel_err(m->forward(in["x"].to(dev), in["t"].to(dev), in["y"].to(dev), in["context"].to(dev), {0}), in["out_skip"]));
  }
  for (const std::string name : {"clip_a", "clip_b"}) {
    io::SafetensorsFile f(dir + "/" + name + ".weights.safetensors");
    auto cfg = encoders::clip_config_from_json(read_json(dir + "/" + name + ".json"), encoders::detect_clip_config(f.header(), "", f.path()));
    auto m = encoders::load_clip_text_model(f, "", cfg);
    m->to(dev);
    const auto in = io::load_safetensors(dir + "/" + name + ".io.safetensors");
    const auto r = m->forward(in["tokens"].to(dev));
    report(name + " penultimate", rel_err(r.penultimate(), in["penultimate_hidden"]));
    report(name + " pooled_projected", rel_err(r.pooled_projected, in["pooled_projected"]));
  }
  {
    io::SafetensorsFile f(dir + "/t5_a.weights.safetensors");
    auto cfg = encoders::t5_config_from_json(read_json(dir + "/t5_a.json"), encoders::detect_t5_config(f.header(), "", f.path()));
    auto m = encoders::load_t5_encoder(f, "", cfg);
    m->to(dev);
    const auto in = io::load_safetensors(dir + "/t5_a.io.safetensors");
    report("t5_a last_hidden", rel_err(m->forward(in["tokens"].to(dev)).last_hidden, in["last_hidden"]));
    report("t5_a long_last_hidden", rel_err(m->forward(in["long_tokens"].to(dev)).last_hidden, in["long_last_hidden"]));
  }
  std::printf("parity on %s (LibTorch %s): worst %.2e (bound 2e-5)\n", dev.str().c_str(), TORCH_VERSION, worst);
  return worst <= 2e-5 ? 0 : 1;
}

int bench(const torch::Device& dev, int size, int steps, torch::ScalarType dtype, bool vae) {
  torch::NoGradGuard g;
  const auto cfg = backbone::MMDiTConfig::sd3_medium();
  const std::int64_t latent = size / 8, tokens = (latent / 2) * (latent / 2), ctx = 154;
  torch::manual_seed(0);
  backbone::MMDiT model(cfg);
  model->to(dev, dtype);
  // Random weights at default init grow activations through 24 blocks; scale the adaLN outputs
  // down so the numbers stay finite (the time does not depend on the values).
  for (auto& p : model->named_parameters(true))
    if (p.key().find("adaLN_modulation") != std::string::npos) p.value().mul_(0.1);
  const auto opts = torch::TensorOptions().device(dev).dtype(dtype);
  sampling::Conditioning cond{torch::randn({1, ctx, 4096}, opts), torch::randn({1, 2048}, opts)};
  sampling::Conditioning uncond{torch::randn({1, ctx, 4096}, opts), torch::randn({1, 2048}, opts)};
  sampling::FlowModel fm = [&](const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& y,
                               const torch::Tensor& c, const std::set<int>& skip) {
    return model->forward(x.to(dtype), t, y, c, skip).to(torch::kFloat32);
  };
  sampling::Guidance guide;
  guide.cfg_scale = 7.0;
  const auto den = sampling::guided_flow_denoiser(fm, cond, uncond, guide, steps);
  const auto sigmas = sampling::ReferenceSchedule{3.0}.sigmas(steps);
  const auto noise = torch::randn({1, 16, latent, latent}, torch::TensorOptions().device(dev));
  // GEMM rate for scale: (tokens + ctx) x hidden x 4 hidden, batch 2.
  const auto a = torch::randn({2 * (tokens + ctx), cfg.hidden_size()}, opts), b = torch::randn({cfg.hidden_size(), cfg.mlp_hidden()}, opts);
  for (int i = 0; i < 3; ++i) torch::mm(a, b);
  sync(dev);
  auto t0 = clock_type::now();
  for (int i = 0; i < 20; ++i) torch::mm(a, b);
  sync(dev);
  const double gemm = 20 * 2.0 * a.size(0) * a.size(1) * b.size(1) / std::chrono::duration<double>(clock_type::now() - t0).count();
  // Warm-up (kernel selection, allocator), then the timed image.
  sampling::Euler{}.sample(den, noise, {1.0, 0.5, 0.0});
  sync(dev);
  t0 = clock_type::now();
  const auto r = sampling::Euler{}.sample(den, noise, sigmas);
  sync(dev);
  const double sample_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  const double flops = 2 * backbone::mmdit_forward_flops(cfg, tokens, ctx) * steps;  // CFG: batch 2
  std::printf("SD3-medium config, %dx%d, %d steps, CFG (batch 2), %s on %s: sampling %.3f s = %.3f s/step "
              "(%.2f TFLOP/s; same-run GEMM %.2f TFLOP/s); finite: %s\n",
              size, size, steps, dtype == torch::kBFloat16 ? "bf16" : "f32", dev.str().c_str(), sample_s, sample_s / steps,
              flops / sample_s / 1e12, gemm / 1e12, torch::isfinite(r.x).all().item<bool>() ? "yes" : "no");
  double vae_s = 0;
  if (vae) {
    autoencoder::KLAutoencoder ae(autoencoder::KLAutoencoderConfig::sd3());
    ae->to(dev, dtype);
    const auto z = autoencoder::SD3LatentFormat{}.process_out(r.x).to(dtype);
    ae->decode(z);  // warm-up
    sync(dev);
    t0 = clock_type::now();
    const auto img = ae->decode(z);
    sync(dev);
    vae_s = std::chrono::duration<double>(clock_type::now() - t0).count();
    std::printf("VAE decode %dx%d: %.3f s (image %s)\n", size, size, vae_s, format_shape(img.sizes().vec()).c_str());
  }
  std::printf("image (sampling + decode): %.3f s\n", sample_s + vae_s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s parity DIR [--device D] | bench [--device D] [--size N] [--steps N] [--dtype bf16|f32] [--no-vae]\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  std::string device = torch::cuda::is_available() ? "cuda" : "cpu", dir, dtype = "bf16";
  int size = 1024, steps = 28;
  bool vae = true;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--device") device = next();
    else if (a == "--size") size = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--dtype") dtype = next();
    else if (a == "--no-vae") vae = false;
    else if (mode == "parity" && dir.empty()) dir = a;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  configure_threads(0);
  const torch::Device dev(device);
  if (dev.is_cuda()) {
    // float32 parity needs full-precision products (no TF32).
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  try {
    if (mode == "parity") return parity(dir, dev);
    if (mode == "bench") return bench(dev, size, steps, dtype == "f32" ? torch::kFloat32 : torch::kBFloat16, vae);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
