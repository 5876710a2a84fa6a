#pragma once
// A tiny SD3 model written by a test in the real key layouts: the tiny text stack
// (encoders/tiny_text_stack.hpp), a 2-block MM-DiT and a narrow VAE, as one all-in-one file
// (sd3_all.safetensors), separate files and a diffusers folder.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "diffuse/autoencoder/kl_autoencoder.hpp"
#include "diffuse/io/mmdit_checkpoint.hpp"
#include "diffuse/io/safetensors.hpp"
#include "encoders/tiny_text_stack.hpp"

namespace diffuse::test {

struct TinySD3 {
  TinyStack text;
  backbone::MMDiT mmdit{[] {
    auto c = backbone::MMDiTConfig::scaling(2);  // hidden 128, 2 heads of 64
    c.context_in = 160;                          // the tiny T5's width
    c.adm_in = 128;                              // 64 + 64 pooled
    c.pos_embed_max_size = 16;
    return c;
  }()};
  autoencoder::KLAutoencoder vae{autoencoder::KLAutoencoderConfig{32, {1, 1, 1, 1}, 1, 3, 16, 32}};
  std::filesystem::path dir = text.dir.path();

  TinySD3() {
    torch::manual_seed(11);
    torch::NoGradGuard g;
    for (auto& p : mmdit->named_parameters(true))
      if (p.key().find("adaLN") != std::string::npos || p.key().find("final_layer") != std::string::npos) p.value().normal_(0, 0.02);
    std::vector<std::pair<std::string, torch::Tensor>> all = io::mmdit_tensors(mmdit, io::KeyLayout::Original, "model.diffusion_model.");
    for (auto& kv : autoencoder::autoencoder_tensors(vae, false, "first_stage_model.")) all.push_back(kv);
    io::SafetensorsFile text_all((dir / "all.safetensors").string());
    for (const auto& t : text_all.tensors()) all.emplace_back(t.name, io::load_tensor(text_all, t).clone());
    io::save_safetensors(dir / "sd3_all.safetensors", all);
    io::save_safetensors(dir / "mmdit.safetensors", io::mmdit_tensors(mmdit, io::KeyLayout::Original));
    io::save_safetensors(dir / "vae.safetensors", autoencoder::autoencoder_tensors(vae, false));
    // The diffusers folder.
    const auto d = dir / "diffusers";
    for (const char* sub : {"transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_3"})
      std::filesystem::create_directories(d / sub);
    io::save_safetensors(d / "transformer/diffusion_pytorch_model.safetensors", io::mmdit_tensors(mmdit, io::KeyLayout::Diffusers));
    io::save_safetensors(d / "vae/diffusion_pytorch_model.safetensors", autoencoder::autoencoder_tensors(vae, true));
    std::filesystem::copy_file(dir / "clip_l.safetensors", d / "text_encoder/model.safetensors");
    std::filesystem::copy_file(dir / "clip_g.safetensors", d / "text_encoder_2/model.safetensors");
    {  // T5 sharded as diffusers ships it: model-0000N-of-00002.safetensors
      io::SafetensorsFile t5((dir / "t5.safetensors").string());
      std::vector<std::pair<std::string, torch::Tensor>> a, b;
      for (const auto& t : t5.tensors()) (a.size() <= b.size() ? a : b).emplace_back(t.name, io::load_tensor(t5, t).clone());
      io::save_safetensors(d / "text_encoder_3/model-00001-of-00002.safetensors", a);
      io::save_safetensors(d / "text_encoder_3/model-00002-of-00002.safetensors", b);
    }
    for (const char* f : {"vocab.json", "merges.txt"}) std::filesystem::copy_file(dir / "tok" / f, d / "tokenizer" / f);
    std::filesystem::copy_file(dir / "tok/spiece.model", d / "tokenizer_3/spiece.model");
  }
  std::string all() const { return (dir / "sd3_all.safetensors").string(); }
  std::string tok() const { return (dir / "tok").string(); }
};

}  // namespace diffuse::test
