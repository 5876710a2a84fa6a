// Where the load time of an SD3 MM-DiT goes (issue 35, item 1): for a checkpoint file, the time
// to construct the module as the loader does (io::construct_for_loading: allocated, not drawn at
// random; LibTorch's own draws took 24-35 s here before), to read and convert the file's tensors, and load_mmdit as a whole, in the
// same process and dtype, so the shares are comparable on a noisy machine.
//   ./bench_sd3_load_parts MMDIT.safetensors [bf16|f16|f32]
// A file: bench_sd3_random_checkpoints DIR writes DIR/mmdit.safetensors (SD3-medium size, float16).
#include <chrono>
#include <cstdio>
#include <string>

#include <ATen/Parallel.h>

#include <diffuse/core/torch_compat.hpp>
#include <diffuse/io/mmdit_checkpoint.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MMDIT.safetensors [bf16|f16|f32]\n", argv[0]);
    return 2;
  }
  diffuse::configure_threads();
  using namespace diffuse;
  const std::string path = argv[1], d = argc > 2 ? argv[2] : "bf16";
  const auto dtype = d == "f32" ? torch::kFloat32 : d == "f16" ? torch::kFloat16 : torch::kBFloat16;
  using clock = std::chrono::steady_clock;
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  io::SafetensorsFile file(path);
  const auto config = backbone::detect_mmdit_config(file.tensors(), path);
  std::int64_t params = 0;
  const auto t0 = clock::now();
  {
    auto m = io::construct_for_loading(dtype, [&] { return backbone::MMDiT(config, /*init_pos_embed=*/false); });
    for (const auto& p : m->parameters()) params += p.numel();
  }
  const auto t1 = clock::now();
  {
    io::LoadOptions lo;
    lo.dtype = dtype;
    const auto tensors = io::read_mmdit_tensors(file, config, lo);
    double touch = 0;
    for (const auto& [name, t] : tensors) touch += t.numel() ? t.reshape(-1)[0].item<double>() : 0.0;
    (void)touch;
  }
  const auto t2 = clock::now();
  {
    io::MMDiTLoadOptions lo;
    lo.dtype = dtype;
    auto m = io::load_mmdit(path, lo);
  }
  const auto t3 = clock::now();
  std::printf("MM-DiT depth %d, %.2fB parameters, %s, %d threads\n", config.depth, params / 1e9, d.c_str(),
              at::get_num_threads());
  std::printf("construct (for loading)  %7.2f s\n", secs(t0, t1));
  std::printf("read + convert tensors   %7.2f s\n", secs(t1, t2));
  std::printf("load_mmdit (all)         %7.2f s\n", secs(t2, t3));
  return 0;
}
