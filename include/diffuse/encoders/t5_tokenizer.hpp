#pragma once
// T5's tokenizer (torch-free): SentencePiece (Unigram) with T5's `spiece.model`, through the
// sentencepiece shim (sentencepiece.hpp explains why a shim). Special ids: pad 0, EOS 1, unk 2.
//
// Why the shim and not our own Unigram reader: sentencepiece's normaliser (NFKC rules compiled
// into the model, whitespace handling) is part of what makes the ids; calling the library gives
// its ids by construction, and the tests compare them with the reference ids.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/encoders/clip_tokenizer.hpp"  // TokenChunk
#include "diffuse/encoders/prompt_weights.hpp"
#include "diffuse/encoders/sentencepiece.hpp"
#include "diffuse/encoders/text_normalize.hpp"

namespace diffuse::encoders {

class T5Tokenizer {
 public:
  static constexpr std::int64_t kPad = 0, kEos = 1;
  static constexpr std::size_t kSd3MaxChars = 226;  // SD3's reference feeds T5 the first 226 characters
  static constexpr const char* kWhereFrom =
      "T5's tokenizer is spiece.model from google/t5-v1_1-xxl, also in the tokenizer_3/ folder of a diffusers SD3 "
      "model";

  explicit T5Tokenizer(const std::filesystem::path& path) : sp_(resolve(path)) {}

  // Ids of `text`, no EOS (SentencePiece's EncodeAsIds).
  std::vector<std::int64_t> encode(std::string_view text) const {
    const auto ids = sp_.encode(text);
    return {ids.begin(), ids.end()};
  }
  // encode(text) + [EOS], cut to `length` (EOS kept last) and padded with 0; length <= 0: no cut,
  // no padding.
  std::vector<std::int64_t> encode_padded(std::string_view text, std::int64_t length) const {
    auto ids = encode(text);
    ids.push_back(kEos);
    if (length > 0) {
      if (static_cast<std::int64_t>(ids.size()) > length) {
        ids.resize(static_cast<std::size_t>(length));
        ids.back() = kEos;
      }
      ids.resize(static_cast<std::size_t>(length), kPad);
    }
    return ids;
  }

  // SD3's reference wrapper: the first 226 characters, weight syntax parsed, each space-separated
  // word encoded on its own, EOS appended, padded with 0 to at least `min_length` (77); longer
  // prompts are neither cut nor chunked.
  TokenChunk sd3_tokens(std::string_view prompt, std::size_t min_length = 77) const {
    const auto cps = text::utf8_to_u32(prompt);
    const auto cut = text::u32_to_utf8(std::u32string_view(cps).substr(0, std::min(cps.size(), kSd3MaxChars)));
    TokenChunk out;
    for (const auto& [word, weight] : weighted_words(cut))
      for (auto id : encode(word)) {
        out.ids.push_back(id);
        out.weights.push_back(weight);
      }
    out.ids.push_back(kEos);
    out.weights.push_back(1.0);
    if (out.ids.size() < min_length) {
      out.ids.resize(min_length, kPad);
      out.weights.resize(min_length, 1.0);
    }
    return out;
  }

  int vocab_size() const { return sp_.vocab_size(); }

 private:
  static std::filesystem::path resolve(const std::filesystem::path& p) {
    namespace fs = std::filesystem;
    if (fs::is_directory(p)) {
      if (fs::is_regular_file(p / "spiece.model")) return p / "spiece.model";
      throw InputError(p.string() + ": no spiece.model here. " + kWhereFrom);
    }
    if (!fs::is_regular_file(p)) throw InputError(p.string() + ": T5 tokenizer file not found. " + kWhereFrom);
    return p;
  }
  SentencePieceProcessor sp_;
};

}  // namespace diffuse::encoders
