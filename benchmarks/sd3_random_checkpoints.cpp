// Writes full-size SD3-medium checkpoints with random float16 weights, streamed (nothing is held
// in memory): mmdit.safetensors (2.03B + position table), vae.safetensors, clip_l.safetensors,
// clip_g.safetensors and t5xxl_fp16.safetensors (4.76B), in the released files' key layouts. Used
// by scripts/sd3_memory_check.sh to measure `diffuse generate`'s peak memory on this machine
// without the released weights (the images are noise; the memory is what is measured).
//   ./bench_sd3_random_checkpoints OUT_DIR
//   ./bench_sd3_random_checkpoints OUT_DIR --mmdit-bf16   (only mmdit.safetensors, in bfloat16: the
//                                                         LoRA step benchmark's base, lora_step.cpp)
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <diffuse/autoencoder/kl_autoencoder.hpp>
#include <diffuse/backbone/mmdit_keys.hpp>
#include <diffuse/encoders/text_encoder_config.hpp>

using namespace diffuse;
using Keys = std::vector<std::pair<std::string, std::vector<std::int64_t>>>;

// float16 (or bfloat16) bits of small values (|x| <= 0.03): random weights that keep activations
// finite-ish.
std::vector<std::uint16_t> half_table(bool bf16) {
  std::vector<std::uint16_t> t;
  for (int i = 0; i < 4096; ++i) {
    const float x = (static_cast<float>(i) / 4095.0f - 0.5f) * 0.06f;
    t.push_back(bf16 ? c10::BFloat16(x).x : at::Half(x).x);
  }
  return t;
}

void write_random(const std::filesystem::path& path, const Keys& keys, bool bf16 = false) {
  nlohmann::ordered_json h;
  std::uint64_t off = 0;
  for (const auto& [name, shape] : keys) {
    std::uint64_t n = 2;
    for (auto s : shape) n *= static_cast<std::uint64_t>(s);
    h[name] = {{"dtype", bf16 ? "BF16" : "F16"}, {"shape", shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string header = h.dump();
  header.resize((header.size() + 7) / 8 * 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  const auto table = half_table(bf16);
  std::vector<std::uint16_t> buf(1 << 20);
  std::uint64_t state = 0x9E3779B97F4A7C15ull, left = off / 2;
  while (left > 0) {
    const auto n = std::min<std::uint64_t>(left, buf.size());
    for (std::uint64_t i = 0; i < n; ++i) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
      buf[i] = table[state & 4095];
    }
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(2 * n));
    left -= n;
  }
  std::printf("wrote %s (%.2f GB)\n", path.c_str(), (8.0 + header.size() + off) / 1e9);
}

int main(int argc, char** argv) {
  const bool mmdit_bf16 = argc == 3 && std::string(argv[2]) == "--mmdit-bf16";
  if (argc != 2 && !mmdit_bf16) {
    std::fprintf(stderr, "usage: %s OUT_DIR [--mmdit-bf16]\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  Keys mm;
  for (const auto& k : backbone::mmdit_keys(backbone::MMDiTConfig::sd3_medium())) mm.emplace_back(k.name, k.shape);
  write_random(dir / "mmdit.safetensors", mm, mmdit_bf16);
  if (mmdit_bf16) return 0;
  Keys vae;
  autoencoder::KLAutoencoder model(autoencoder::KLAutoencoderConfig::sd3());
  for (const auto& p : model->named_parameters(true)) vae.emplace_back(p.key(), p.value().sizes().vec());
  write_random(dir / "vae.safetensors", vae);
  write_random(dir / "clip_l.safetensors", encoders::clip_keys(encoders::clip_l_config()));
  write_random(dir / "clip_g.safetensors", encoders::clip_keys(encoders::clip_g_config()));
  write_random(dir / "t5xxl_fp16.safetensors", encoders::t5_keys(encoders::t5_xxl_config()));
  return 0;
}
