// Example 2: text to image with the SD3 generator — load once, generate many, watch the steps.
//   ./02_generate MODEL TOKENIZERS_DIR "a photo of a cat" [OUT.png]   (a released SD3 / SD3.5 model)
//   ./02_generate OUT_DIR                                              (a tiny random model, no text encoders)
// MODEL is an all-in-one .safetensors file or a diffusers folder; separate text encoder files go in
// SD3ModelFiles (see `diffuse generate --help` for the same choices on the command line).
#include <cstdio>
#include <filesystem>
#include <string>

#include <diffuse/diffuse.hpp>
#include <diffuse/pipeline/images.hpp>
#include <diffuse/pipeline/sd3_generator.hpp>

#include "tiny_model.hpp"

using namespace diffuse;

int main(int argc, char** argv) {
  configure_threads();
  pipeline::SD3ModelFiles extra;
  std::string model, prompt = "a photo of a cat", out;
  pipeline::GenerateRequest request;
  pipeline::SD3GeneratorOptions options;  // bf16 on the CPU; .device = torch::kCUDA with LibTorch 2.x + CUDA
  if (argc >= 4) {
    model = argv[1];
    extra.tokenizers = argv[2];
    prompt = argv[3];
    out = argc > 4 ? argv[4] : "out.png";
  } else {
    const std::filesystem::path dir = argc > 1 ? argv[1] : std::filesystem::temp_directory_path();
    model = write_tiny_model(dir, "tiny_sd3_02.safetensors");
    out = (dir / "example_02.png").string();
    request.width = request.height = 64;  // the tiny model's default would be 1024
    request.steps = 4;
  }
  // 1. Find the parts (family detected from the MM-DiT's shapes) and load them once.
  pipeline::SD3Generator generator(pipeline::find_sd3_model(model, extra), options);
  std::printf("model family: %s\n", generator.files().family.c_str());
  // 2. Generate: a batch of prompts, one seed (image i uses seed + i), a callback per step.
  request.prompts = {prompt, prompt + ", watercolour"};
  request.seed = 42;
  request.on_step = [](const sampling::StepInfo& s) {
    std::printf("step %d/%d, sigma %.3f\n", s.step + 1, s.steps, s.sigma);
    return true;  // false stops early
  };
  const auto images = generator.generate(request);  // (2, 3, H, W) in [-1, 1]
  // 3. Save with the generation parameters in the PNG ("parameters" chunk, A1111 form).
  const auto settings = generator.settings(request);
  for (int i = 0; i < 2; ++i) {
    const auto path = std::filesystem::path(out).replace_extension(std::to_string(i) + ".png").string();
    io::write_png(path, pipeline::to_rgb(images[i]),
                  {{"parameters", pipeline::parameters_text(request.prompts[static_cast<std::size_t>(i)], "", settings,
                                                            request.seed + static_cast<std::uint64_t>(i),
                                                            generator.files().family, "diffuse example")}});
    std::printf("wrote %s\n", path.c_str());
  }
  // Generating again reuses the loaded weights.
  request.prompts = {prompt};
  request.seed = 43;
  generator.generate(request);
  return 0;
}
