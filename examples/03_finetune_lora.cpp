// Example 3: fine-tune an SD3 checkpoint with LoRA on a folder of captioned images, in C++.
//   ./03_finetune_lora MODEL TOKENIZERS_DIR DATA_DIR OUT_DIR   (a released SD3 / SD3.5 model)
//   ./03_finetune_lora OUT_DIR                                  (a tiny random model and 8 images it draws)
// DATA_DIR holds images (png, jpg, webp) with same-named .txt captions or a metadata.jsonl; the
// LoRA is written to OUT_DIR/lora.safetensors (diffusers layout) and lora_kohya.safetensors, ready
// for `diffuse generate --lora` or SD3GeneratorOptions::loras. The command line does the same:
//   diffuse train --init MODEL --data DATA_DIR --out OUT_DIR --lora-rank 16 --steps 500
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <diffuse/diffuse.hpp>
#include <diffuse/data/image_folder.hpp>
#include <diffuse/pipeline/images.hpp>
#include <diffuse/pipeline/sd3_generator.hpp>
#include <diffuse/training/lora_trainer.hpp>

#include "tiny_model.hpp"

using namespace diffuse;
namespace fs = std::filesystem;

// 8 striped images, 64x64, each with a caption file.
void write_images(const fs::path& dir) {
  fs::create_directories(dir);
  for (int k = 0; k < 8; ++k) {
    io::RGBImage img = xt::zeros<std::uint8_t>({std::size_t{64}, std::size_t{64}, std::size_t{3}});
    for (std::size_t y = 0; y < 64; ++y)
      for (std::size_t x = 0; x < 64; ++x) img(y, x, k % 3) = ((x + y + 8 * k) / 8) % 2 ? 230 : 20;
    io::write_png(dir / ("stripes" + std::to_string(k) + ".png"), img);
    std::ofstream(dir / ("stripes" + std::to_string(k) + ".txt")) << "diagonal stripes, variant " << k;
  }
}

int main(int argc, char** argv) {
  configure_threads();
  pipeline::SD3ModelFiles extra;
  std::string model;
  fs::path data, out;
  auto config = training::LoraTrainConfig::defaults();  // rank 16, attention targets, lr 1e-4, 500 steps
  pipeline::SD3GeneratorOptions options;                 // the base in bf16: frozen, only the adapters are float32
  if (argc >= 5) {
    model = argv[1], extra.tokenizers = argv[2], data = argv[3], out = argv[4];
  } else {
    const fs::path dir = argc > 1 ? argv[1] : fs::temp_directory_path();
    model = write_tiny_model(dir, "tiny_sd3_03.safetensors");
    data = dir / "example_03_images";
    out = dir / "example_03_lora";
    fs::remove_all(out);
    write_images(data);
    config.resolution = 64, config.rank = 4, config.lr = 3e-3, config.steps = 30, config.log_every = 10;
    options.dtype = torch::kFloat32;
  }
  // 1. The base model (any file or folder `diffuse generate` reads) and the images.
  pipeline::SD3Generator base(pipeline::find_sd3_model(model, extra), options);
  const data::ImageFolder images(data);
  // 2. The trainer: encodes the images and captions once, attaches the adapters, trains them.
  training::TrainCallbacks log;
  log.log = [](const std::string& line) { std::printf("%s\n", line.c_str()); };
  // The generator's own typedef names what is trained: one model trains, fine-tunes and generates.
  training::LoraTrainer<pipeline::SD3Inference::objective_type, pipeline::SD3Generator> trainer(base, images, out, config, false, log);
  const auto result = trainer.run();
  std::printf("fit loss %.4f -> %.4f; LoRA in %s\n", result.fit_loss_before, result.fit_loss_after,
              (out / "lora.safetensors").c_str());
  // 3. Generate with it (a new generator: the base without the trainer's adapters, the file merged).
  pipeline::SD3GeneratorOptions with_lora = options;
  with_lora.loras.push_back({(out / "lora.safetensors").string(), 1.0});
  pipeline::GenerateRequest request;
  request.prompts = {"diagonal stripes"};
  if (argc < 5) request.width = request.height = 64, request.steps = 4;
  const auto image = pipeline::SD3Generator(pipeline::find_sd3_model(model, extra), with_lora).generate(request);
  io::write_png(out / "sample.png", pipeline::to_rgb(image[0]));
  return result.fit_loss_after < result.fit_loss_before ? 0 : 1;
}
