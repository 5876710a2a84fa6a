#pragma once
// Where the model trainer's conditioning encoder comes from, by the kind of the pipeline's
// conditioning slot: one learned with the model (encoders::CaptionConditioning: its tokenizer is
// trained on the run's captions and written into the run's folder, then read back from there) or
// SD3's released text stack (encoders::SD3TextConditioning: frozen, from the files the config's
// text_stack names). A trained model's folder is opened the same way (pipeline/trained_model.hpp).
#include <concepts>
#include <filesystem>
#include <string>
#include <vector>

#include "diffuse/core/error.hpp"
#include "diffuse/encoders/caption_encoder.hpp"
#include "diffuse/encoders/sd3_text_conditioning.hpp"
#include "diffuse/training/train_config.hpp"

namespace diffuse::training {

template <class C>
concept LearnedConditioning = requires(const std::filesystem::path& dir, const std::vector<std::string>& captions,
                                       const encoders::CaptionEncoderConfig& config) {
  { C::create(dir, captions, config) } -> std::same_as<C>;
  { C::load(dir) } -> std::same_as<C>;
};

template <class C>
concept ReleasedTextStack = requires(const encoders::SD3TextSources& s, const encoders::SD3TextOptions& o) {
  { C::load(s, o) } -> std::same_as<C>;
};

template <class C>
concept TrainableConditioning = LearnedConditioning<C> || ReleasedTextStack<C>;

inline encoders::SD3TextSources text_stack_sources(const TextStackFiles& f) {
  if (f.clip_l.empty() && f.clip_g.empty() && f.t5.empty())
    throw InputError("train config: the pipeline conditions on SD3's text stack; text_stack names no encoder "
                     "(clip_l, clip_g, t5: weight files, e.g. an SD3 all-in-one checkpoint for all three)");
  return {.clip_l = f.clip_l, .clip_g = f.clip_g, .t5 = f.t5, .tokenizers = f.tokenizers, .clip_tokenizer = "", .t5_tokenizer = ""};
}

// The conditioning encoder of the run (or trained model) in `dir` with config `c`.
template <TrainableConditioning C>
C open_conditioning(const std::filesystem::path& dir, const TrainConfig& c) {
  if constexpr (LearnedConditioning<C>) {
    return C::load(dir);
  } else {
    encoders::SD3TextOptions o;
    o.t5_length = c.text_stack.t5_length;
    o.drop_rate = c.drop_rate;
    return C::load(text_stack_sources(c.text_stack), o);
  }
}

}  // namespace diffuse::training
