#pragma once
// A tiny SD3 text stack written by tests: CLIP vocabulary, T5-style SentencePiece model, and
// CLIP-L / CLIP-G / T5 encoders in the real key layout (all-in-one and separate files).
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "diffuse/encoders/sd3_text_conditioning.hpp"
#include "diffuse/encoders/sentencepiece.hpp"
#include "diffuse/io/safetensors.hpp"
#include "test_util.hpp"

namespace diffuse::test {

using encoders::CLIPTextConfig;
using encoders::CLIPTextModel;
using encoders::SD3TextSources;
using encoders::SentencePieceLibrary;
using encoders::T5Config;
using encoders::T5Encoder;

// A folder with a tiny CLIP vocabulary (vocab.json + merges.txt: letters, word ends, specials)
// and a tiny T5-style SentencePiece model (pad 0, EOS 1, unk 2), plus tiny encoders: CLIP-L
// width 64 (quick-GELU), CLIP-G width 64 with projection (GELU), T5 d_model 160 (2 heads).
struct TinyStack {
  test::TempDir dir;
  CLIPTextConfig lc{60, 77, 64, 2, 0, 128, "quick_gelu", true, 1e-5};
  CLIPTextConfig gc{60, 77, 64, 3, 0, 128, "gelu", true, 1e-5};
  T5Config tc{40, 160, 80, 2, 2, 96, 32, 128, 1e-6};
  CLIPTextModel l{lc}, g{gc};
  T5Encoder t{tc};

  TinyStack() {
    nlohmann::json v;
    int id = 0;
    for (char c = 'a'; c <= 'z'; ++c) v[std::string(1, c)] = id++;
    for (char c = 'a'; c <= 'z'; ++c) v[std::string(1, c) + "</w>"] = id++;
    v["<|startoftext|>"] = 58;
    v["<|endoftext|>"] = 59;
    std::filesystem::create_directories(dir / "tok");
    std::ofstream(dir / "tok/vocab.json") << v.dump();
    std::ofstream(dir / "tok/merges.txt") << "#version: 0.2\na b\n";
    {
      std::ofstream text(dir / "words.txt");
      for (int i = 0; i < 300; ++i) text << "a red circle and " << (i % 7) << " blue squares left of the green triangle\n";
    }
    SentencePieceLibrary::shared()->train("--input=" + (dir / "words.txt").string() + " --model_prefix=" +
                                          (dir / "tok/spiece").string() +
                                          " --vocab_size=30 --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --minloglevel=2");
    torch::manual_seed(5);
    torch::NoGradGuard ng;
    for (auto* m : {static_cast<torch::nn::Module*>(l.get()), static_cast<torch::nn::Module*>(g.get()),
                    static_cast<torch::nn::Module*>(t.get())})
      for (auto& p : m->parameters()) p.normal_(0, 0.2);
    std::vector<std::pair<std::string, torch::Tensor>> all, lw, gw, tw;
    for (const auto& p : l->named_parameters(true)) {
      all.emplace_back("text_encoders.clip_l.transformer." + p.key(), p.value());
      lw.emplace_back(p.key(), p.value());
    }
    for (const auto& p : g->named_parameters(true)) {
      all.emplace_back("text_encoders.clip_g.transformer." + p.key(), p.value());
      gw.emplace_back(p.key(), p.value());
    }
    for (const auto& p : t->named_parameters(true)) {
      all.emplace_back("text_encoders.t5xxl.transformer." + p.key(), p.value());
      tw.emplace_back(p.key(), p.value());
    }
    io::save_safetensors(dir / "all.safetensors", all);
    io::save_safetensors(dir / "clip_l.safetensors", lw);
    io::save_safetensors(dir / "clip_g.safetensors", gw);
    io::save_safetensors(dir / "t5.safetensors", tw);
  }
  SD3TextSources all_in_one() const {
    const auto f = (dir / "all.safetensors").string();
    return {f, f, f, (dir / "tok").string(), "", ""};
  }
  SD3TextSources separate() const {
    return {(dir / "clip_l.safetensors").string(), (dir / "clip_g.safetensors").string(), (dir / "t5.safetensors").string(),
            (dir / "tok").string(), "", ""};
  }
};


}  // namespace diffuse::test
