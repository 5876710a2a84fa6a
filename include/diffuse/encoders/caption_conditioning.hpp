#pragma once
// The conditioning-encoder slot of a pipeline for captioned data: a caption tokenizer
// (SentencePiece trained on the captions) and the frozen caption encoder, kept together in a
// model folder as `tokenizer.model` and `text_encoder.safetensors` (its config in the metadata).
// Its fingerprint covers both files' contents, so a feature cache keyed by it is never stale.
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <torch/types.h>

#include "diffuse/core/config.hpp"
#include "diffuse/core/hash.hpp"
#include "diffuse/encoders/caption_encoder.hpp"
#include "diffuse/encoders/caption_tokenizer.hpp"
#include "diffuse/io/safetensors.hpp"

namespace diffuse::encoders {

class CaptionConditioning {
 public:
  static constexpr std::string_view name = "caption-encoder";
  static constexpr const char* tokenizer_file = "tokenizer.model";
  static constexpr const char* encoder_file = "text_encoder.safetensors";

  // Trains the tokenizer on `captions` and initialises the encoder (seeded) into `dir`.
  static CaptionConditioning create(const std::filesystem::path& dir, const std::vector<std::string>& captions,
                                    CaptionEncoderConfig c, int tokenizer_vocab = 128) {
    std::filesystem::create_directories(dir);
    CaptionTokenizer::train(captions, dir / tokenizer_file, tokenizer_vocab);
    CaptionTokenizer tok(dir / tokenizer_file, c.length);
    c.vocab_size = tok.vocab_size();
    for (const auto& caption : captions) {  // a cut caption would silently lose its second object
      bool cut = false;
      tok.ids(caption, &cut);
      if (cut)
        throw InputError("caption '" + caption + "' needs more than " + std::to_string(c.length - 1) +
                         " tokens; raise the text encoder's length");
    }
    CaptionEncoder enc(c);
    std::vector<std::pair<std::string, torch::Tensor>> w;
    for (const auto& p : enc->named_parameters(true)) w.emplace_back(p.key(), p.value());
    io::save_safetensors(dir / encoder_file, w, {{"diffuse.caption_encoder", config_to_json(c).dump()}});
    return load(dir);
  }

  static CaptionConditioning load(const std::filesystem::path& dir) {
    const auto ef = dir / encoder_file, tf = dir / tokenizer_file;
    if (!std::filesystem::is_regular_file(tf)) throw InputError(tf.string() + ": tokenizer missing (written by `diffuse train`)");
    if (!std::filesystem::is_regular_file(ef)) throw InputError(ef.string() + ": text encoder missing (written by `diffuse train`)");
    io::SafetensorsFile f(ef.string());
    const auto it = f.metadata().find("diffuse.caption_encoder");
    if (it == f.metadata().end()) throw InputError(ef.string() + ": no diffuse.caption_encoder config in the metadata");
    const auto c = config_from_json<CaptionEncoderConfig>(nlohmann::json::parse(it->second));
    CaptionConditioning out(std::make_shared<CaptionTokenizer>(tf, c.length), CaptionEncoder(c));
    if (out.tokenizer_->vocab_size() != c.vocab_size)
      throw InputError(tf.string() + ": tokenizer has " + std::to_string(out.tokenizer_->vocab_size()) +
                       " pieces, the encoder expects " + std::to_string(c.vocab_size));
    torch::NoGradGuard g;
    for (auto& p : out.encoder_->named_parameters(true)) p.value().copy_(io::load_tensor(f, p.key(), {torch::kFloat32}));
    out.encoder_->eval();
    out.fingerprint_ = Fingerprint().add_file(tf).add_file(ef).hex();
    return out;
  }

  int width() const { return encoder_->config().width; }
  int pooled_width() const { return encoder_->config().width; }  // pooled = mean of the context
  int length() const { return encoder_->config().length; }
  const std::string& fingerprint() const { return fingerprint_; }
  const CaptionTokenizer& tokenizer() const { return *tokenizer_; }

  TextFeatures encode(const std::vector<std::string>& texts) const {
    torch::NoGradGuard g;
    return encoder_->forward(tokenizer_->encode(texts));
  }

 private:
  CaptionConditioning(std::shared_ptr<CaptionTokenizer> t, CaptionEncoder e) : tokenizer_(std::move(t)), encoder_(std::move(e)) {}
  std::shared_ptr<CaptionTokenizer> tokenizer_;
  mutable CaptionEncoder encoder_;
  std::string fingerprint_;
};

}  // namespace diffuse::encoders
