#pragma once
// The backbone slot of a pipeline: the MM-DiT with its structural variant in the type
// (`MMDiTBackbone<QKNorm::RMS>` is SD3's recipe with QK-normalisation, paper section 5.3.2), sizes
// from the config, and the initialisation for training from scratch.
//
// Initialisation follows DiT (Peebles & Xie 2023, section 3.2 "adaLN-Zero"): Xavier-uniform linear
// weights and zero biases, N(0, 0.02) for the timestep MLP, and zeros for every adaLN modulation and
// for the final projection, so each block starts as the identity and the model outputs 0.
#include <string_view>

#include <torch/nn/init.h>
#include <torch/nn/modules/linear.h>

#include "diffuse/backbone/mmdit.hpp"

namespace diffuse::backbone {

// QK-normalisation in the type: None (SD3-medium), RMS (SD3.5, the paper's section 5.3.2), or
// AsStored: whatever the checkpoint or config says, for a generator that reads released files.
enum class QKNorm { None, RMS, AsStored };

inline void init_for_training(MMDiT& m) {
  torch::NoGradGuard g;
  for (auto& mod : m->modules(false))
    if (auto* lin = mod->as<torch::nn::Linear>()) {
      torch::nn::init::xavier_uniform_(lin->weight);
      if (lin->bias.defined()) lin->bias.zero_();
    }
  // Patch embedding as a linear map of the flattened patch (DiT).
  auto& w = m->x_embedder->proj->weight;
  torch::nn::init::xavier_uniform_(w.view({w.size(0), -1}));
  m->x_embedder->proj->bias.zero_();
  for (auto& p : m->t_embedder->parameters()) p.dim() > 1 ? torch::nn::init::normal_(p, 0.0, 0.02) : p.zero_();
  auto zero_last = [](torch::nn::Sequential& s) {
    auto lin = s[s->size() - 1]->as<torch::nn::Linear>();
    lin->weight.zero_();
    lin->bias.zero_();
  };
  for (const auto& b : *m->joint_blocks) {
    auto jb = b->as<JointBlock>();
    zero_last(jb->context_block->adaLN_modulation);
    zero_last(jb->x_block->adaLN_modulation);
  }
  zero_last(m->final_layer->adaLN_modulation);
  m->final_layer->linear->weight.zero_();
  m->final_layer->linear->bias.zero_();
}

template <QKNorm QK = QKNorm::RMS>
struct MMDiTBackbone {
  static constexpr std::string_view name = QK == QKNorm::RMS ? "mmdit-qknorm" : QK == QKNorm::None ? "mmdit" : "mmdit-as-stored";
  static constexpr QKNorm qk_norm = QK;
  using module_type = MMDiT;
  // The type decides the structure (AsStored: the config does); the config gives the sizes.
  static MMDiTConfig configure(MMDiTConfig c) {
    if constexpr (QK != QKNorm::AsStored) c.qk_norm = QK == QKNorm::RMS;
    return c;
  }
  static MMDiT create(const MMDiTConfig& c) {
    MMDiT m(configure(c));
    init_for_training(m);
    return m;
  }
};

}  // namespace diffuse::backbone
