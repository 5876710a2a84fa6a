// Example 1: write a checkpoint, read it back lazily, recognise what it holds.
//   ./01_checkpoint_io [OUT_DIR]
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <diffuse/diffuse.hpp>

// A config is a plain struct; Boost.Hana reflection gives it strict JSON I/O.
struct TinyConfig {
  BOOST_HANA_DEFINE_STRUCT(TinyConfig, (int, depth), (int, patch), (double, shift));
};

int main(int argc, char** argv) {
  diffuse::configure_threads();
  const std::filesystem::path dir = argc > 1 ? argv[1] : std::filesystem::temp_directory_path();
  const TinyConfig config{2, 2, 3.0};
  const std::int64_t hidden = 64 * config.depth;

  // Tensors named as an MM-DiT checkpoint names them.
  torch::manual_seed(0);
  const auto path = dir / "tiny_mmdit.safetensors";
  diffuse::io::save_safetensors(path,
                                {{"x_embedder.proj.weight", torch::randn({hidden, 16, config.patch, config.patch})},
                                 {"final_layer.linear.weight", torch::randn({64, hidden}).to(torch::kBFloat16)}},
                                {{"config", diffuse::config_to_json(config).dump()}});

  // Reading maps the file; each tensor is a zero-copy view until converted.
  diffuse::io::SafetensorsFile file(path.string());
  const auto w = diffuse::io::load_tensor(file, "final_layer.linear.weight", {torch::kFloat32});
  const auto stored = diffuse::config_from_json<TinyConfig>(nlohmann::json::parse(file.metadata().at("config")));
  std::printf("read %zu tensors; final_layer.linear.weight %s as %s; config depth=%d shift=%.1f\n",
              file.tensors().size(), std::string(diffuse::io::dtype_name(file.info("final_layer.linear.weight").dtype)).c_str(),
              std::string(c10::toString(w.scalar_type())).c_str(), stored.depth, stored.shift);
  for (const auto& c : diffuse::io::detect_components(file.tensors()))
    std::printf("recognised: %s (%s), hidden %lld\n", std::string(diffuse::io::to_string(c.kind)).c_str(),
                c.family.c_str(), static_cast<long long>(c.sizes.at("hidden")));
  return stored.depth == config.depth ? 0 : 1;
}
