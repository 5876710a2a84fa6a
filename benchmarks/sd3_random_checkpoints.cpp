// Writes full-size SD3-medium checkpoints with random float16 weights, streamed (nothing is held
// in memory): mmdit.safetensors (2.03B + position table), vae.safetensors, clip_l.safetensors,
// clip_g.safetensors and t5xxl_fp16.safetensors (4.76B), in the released files' key layouts. Used
// by scripts/sd3_memory_check.sh to measure `diffuse generate`'s peak memory on this machine
// without the released weights (the images are noise; the memory is what is measured).
//   ./bench_sd3_random_checkpoints OUT_DIR
//   ./bench_sd3_random_checkpoints OUT_DIR --mmdit-bf16   (only mmdit.safetensors, in bfloat16: the
//                                                         LoRA step benchmark's base, lora_step.cpp)
//   ./bench_sd3_random_checkpoints OUT_DIR --all-in-one [bf16|f32]
//                                                        (only sd3_medium_incl_clips.safetensors: MM-DiT,
//                                                         VAE, CLIP-L and CLIP-G in one file under the
//                                                         released prefixes, T5 absent, as released; with
//                                                         a dtype, sd3_medium_incl_clips_DTYPE.safetensors
//                                                         in that dtype: issue 35's other files)
//   ./bench_sd3_random_checkpoints OUT_DIR --sd35-large   (the SD3.5-large MM-DiT, 8.1B, as
//                                                         sd3.5_large_mmdit.safetensors; the encoders
//                                                         and VAE as above; issue 35 item 4)
#include <bit>
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

enum class Stored { F16, BF16, F32 };

// The stored bits of small values (|x| <= 0.03): random weights that keep activations finite-ish.
template <class Bits>
std::vector<Bits> value_table(Stored dtype) {
  std::vector<Bits> t;
  for (int i = 0; i < 4096; ++i) {
    const float x = (static_cast<float>(i) / 4095.0f - 0.5f) * 0.06f;
    if constexpr (sizeof(Bits) == 4) t.push_back(std::bit_cast<std::uint32_t>(x));
    else t.push_back(dtype == Stored::BF16 ? c10::BFloat16(x).x : at::Half(x).x);
  }
  return t;
}

template <class Bits>
void write_values(std::ofstream& out, Stored dtype, std::uint64_t count) {
  const auto table = value_table<Bits>(dtype);
  std::vector<Bits> buf(1 << 20);
  std::uint64_t state = 0x9E3779B97F4A7C15ull, left = count;
  while (left > 0) {
    const auto n = std::min<std::uint64_t>(left, buf.size());
    for (std::uint64_t i = 0; i < n; ++i) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;  // xorshift64
      buf[i] = table[state & 4095];
    }
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(sizeof(Bits) * n));
    left -= n;
  }
}

void write_random(const std::filesystem::path& path, const Keys& keys, Stored dtype = Stored::F16) {
  const std::uint64_t size = dtype == Stored::F32 ? 4 : 2;
  const char* name_of = dtype == Stored::F32 ? "F32" : dtype == Stored::BF16 ? "BF16" : "F16";
  nlohmann::ordered_json h;
  std::uint64_t off = 0;
  for (const auto& [name, shape] : keys) {
    std::uint64_t n = size;
    for (auto s : shape) n *= static_cast<std::uint64_t>(s);
    h[name] = {{"dtype", name_of}, {"shape", shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string header = h.dump();
  header.resize((header.size() + 7) / 8 * 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  if (size == 4) write_values<std::uint32_t>(out, dtype, off / size);
  else write_values<std::uint16_t>(out, dtype, off / size);
  std::printf("wrote %s (%.2f GB)\n", path.c_str(), (8.0 + header.size() + off) / 1e9);
}

Keys prefixed(const std::string& prefix, const Keys& keys) {
  Keys out;
  for (const auto& [name, shape] : keys) out.emplace_back(prefix + name, shape);
  return out;
}

int main(int argc, char** argv) {
  const std::string mode = argc >= 3 ? argv[2] : "", stored = argc == 4 ? argv[3] : "";
  const bool all_in_one = mode == "--all-in-one", bad_dtype = !stored.empty() && stored != "bf16" && stored != "f32";
  if (argc < 2 || argc > 4 || (argc == 4 && (!all_in_one || bad_dtype)) ||
      (argc == 3 && mode != "--mmdit-bf16" && !all_in_one && mode != "--sd35-large")) {
    std::fprintf(stderr, "usage: %s OUT_DIR [--mmdit-bf16 | --all-in-one [bf16|f32] | --sd35-large]\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  Keys mm;
  const auto mm_config = mode == "--sd35-large" ? backbone::MMDiTConfig::sd35_large() : backbone::MMDiTConfig::sd3_medium();
  for (const auto& k : backbone::mmdit_keys(mm_config)) mm.emplace_back(k.name, k.shape);
  Keys vae;
  autoencoder::KLAutoencoder model(autoencoder::KLAutoencoderConfig::sd3());
  for (const auto& p : model->named_parameters(true)) vae.emplace_back(p.key(), p.value().sizes().vec());
  const auto clip_l = encoders::clip_keys(encoders::clip_l_config()), clip_g = encoders::clip_keys(encoders::clip_g_config());
  if (mode == "--all-in-one") {
    Keys all = prefixed("model.diffusion_model.", mm);
    for (auto& k : prefixed("first_stage_model.", vae)) all.push_back(k);
    for (auto& k : prefixed("text_encoders.clip_l.transformer.", clip_l)) all.push_back(k);
    for (auto& k : prefixed("text_encoders.clip_g.transformer.", clip_g)) all.push_back(k);
    const auto dtype = stored == "bf16" ? Stored::BF16 : stored == "f32" ? Stored::F32 : Stored::F16;
    write_random(dir / (stored.empty() ? "sd3_medium_incl_clips.safetensors" : "sd3_medium_incl_clips_" + stored + ".safetensors"),
                 all, dtype);
    return 0;
  }
  write_random(dir / (mode == "--sd35-large" ? "sd3.5_large_mmdit.safetensors" : "mmdit.safetensors"), mm,
               mode == "--mmdit-bf16" ? Stored::BF16 : Stored::F16);
  if (mode == "--mmdit-bf16") return 0;
  write_random(dir / "vae.safetensors", vae);
  write_random(dir / "clip_l.safetensors", clip_l);
  write_random(dir / "clip_g.safetensors", clip_g);
  write_random(dir / "t5xxl_fp16.safetensors", encoders::t5_keys(encoders::t5_xxl_config()));
  return 0;
}
