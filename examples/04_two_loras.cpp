// Example 4: two LoRA files merged into one generator at different strengths.
//   ./04_two_loras MODEL TOKENIZERS_DIR STYLE.safetensors:0.8 SUBJECT.safetensors:0.5 "prompt"
//   ./04_two_loras OUT_DIR          (a tiny random model and two random LoRAs, one per layout)
// Either file may be in the diffusers / PEFT layout or kohya's; each is merged into the MM-DiT's
// weights once, when the generator loads, so generation costs the same as without them.
#include <cstdio>
#include <filesystem>
#include <string>

#include <diffuse/diffuse.hpp>
#include <diffuse/pipeline/images.hpp>
#include <diffuse/pipeline/sd3_generator.hpp>

#include "tiny_model.hpp"

using namespace diffuse;
namespace fs = std::filesystem;

// "FILE:STRENGTH" -> {file, strength} (strength 1 without a colon).
pipeline::SD3GeneratorOptions::Lora lora_arg(const std::string& s) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos) return {s, 1.0};
  return {s.substr(0, colon), std::stod(s.substr(colon + 1))};
}

int main(int argc, char** argv) {
  configure_threads();
  pipeline::SD3ModelFiles extra;
  std::string model, prompt = "a lighthouse at dusk";
  pipeline::SD3GeneratorOptions options;
  pipeline::GenerateRequest request;
  fs::path dir;
  if (argc >= 5) {
    model = argv[1], extra.tokenizers = argv[2];
    options.loras = {lora_arg(argv[3]), lora_arg(argv[4])};
    if (argc > 5) prompt = argv[5];
    dir = ".";
  } else {
    dir = argc > 1 ? argv[1] : fs::temp_directory_path();
    model = write_tiny_model(dir, "tiny_sd3_04.safetensors");
    // Two LoRAs on the attention of block 0: one written by diffusers / PEFT (to_q's A and B), one
    // by kohya (the fused qkv's lora_down / lora_up / alpha). Hidden size 128 in the tiny model.
    torch::manual_seed(4);
    io::save_safetensors(dir / "style_diffusers.safetensors",
                         {{"transformer.transformer_blocks.0.attn.to_q.lora_A.weight", torch::randn({4, 128}) * 0.3},
                          {"transformer.transformer_blocks.0.attn.to_q.lora_B.weight", torch::randn({128, 4}) * 0.3}},
                         {{"format", "pt"}});
    io::save_safetensors(dir / "subject_kohya.safetensors",
                         {{"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight", torch::randn({8, 128}) * 0.3},
                          {"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_up.weight", torch::randn({384, 8}) * 0.3},
                          {"lora_unet_joint_blocks_0_x_block_attn_qkv.alpha", torch::tensor(4.0f)}});
    options.loras = {{(dir / "style_diffusers.safetensors").string(), 0.8}, {(dir / "subject_kohya.safetensors").string(), 0.5}};
    request.width = request.height = 64, request.steps = 4;
  }
  for (const auto& l : options.loras) std::printf("LoRA %s at strength %.2f\n", l.path.c_str(), l.strength);
  pipeline::SD3Generator generator(pipeline::find_sd3_model(model, extra), options);
  request.prompts = {prompt};
  request.seed = 1;
  const auto image = generator.generate(request);
  const auto out = dir / "example_04.png";
  io::write_png(out, pipeline::to_rgb(image[0]), {{"loras", "two, at 0.8 and 0.5"}});
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
