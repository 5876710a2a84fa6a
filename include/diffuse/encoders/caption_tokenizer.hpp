#pragma once
// The shapes task's tokenizer: a SentencePiece BPE model trained on the captions with the
// sentencepiece library (through the shim, encoders/sentencepiece.hpp), with T5's special-id
// convention (pad 0, eos 1, unk 2, no bos). Captions become fixed-length rows: ids, EOS, padding.
// BPE, not unigram: on ~25 distinct words the unigram trainer stopped at 45 pieces of word
// fragments ("ree", "el"), while BPE with 128 merges ends with every word whole and still spells
// unseen words from characters.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "diffuse/core/error.hpp"
#include "diffuse/encoders/sentencepiece.hpp"
#include "diffuse/io/atomic_file.hpp"

namespace diffuse::encoders {

class CaptionTokenizer {
 public:
  static constexpr int pad_id = 0, eos_id = 1, unk_id = 2;

  // Trains `model_path` (a .model file) on the captions, in memory and single-threaded: the same
  // captions give the same file, byte for byte, wherever it is written (the model records no
  // paths), so a run's feature-cache key depends on its captions only.
  static void train(const std::vector<std::string>& captions, const std::filesystem::path& model_path,
                    int vocab_size = 128) {
    if (captions.empty()) throw InputError("caption tokenizer: no captions to train on");
    if (model_path.extension() != ".model") throw InputError(model_path.string() + ": the tokenizer file must end in .model");
    const auto model = SentencePieceLibrary::shared()->train(
        captions, "--vocab_size=" + std::to_string(vocab_size) +
                      " --model_type=bpe --hard_vocab_limit=false --character_coverage=1.0 --num_threads=1"
                      " --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --minloglevel=2");
    io::AtomicFileWriter w(model_path);
    w.write(model.data(), model.size());
    w.commit();
  }

  CaptionTokenizer(const std::filesystem::path& model_path, int length)
      : sp_(std::make_shared<SentencePieceProcessor>(model_path)), length_(length) {
    if (length < 2) throw InputError("caption tokenizer: length must be at least 2");
    if (sp_->pad_id() != pad_id || sp_->eos_id() != eos_id)
      throw InputError(model_path.string() + ": not a caption tokenizer (expected pad 0 and eos 1)");
  }

  int length() const { return length_; }
  int vocab_size() const { return sp_->vocab_size(); }

  // One caption -> `length` ids: the pieces, EOS, then padding. A longer caption is cut to
  // length - 1 pieces (EOS kept last); `truncated` says so.
  std::vector<int> ids(const std::string& text, bool* truncated = nullptr) const {
    auto v = sp_->encode(text);
    const bool cut = static_cast<int>(v.size()) > length_ - 1;
    if (cut) v.resize(static_cast<std::size_t>(length_ - 1));
    if (truncated) *truncated = cut;
    v.push_back(eos_id);
    v.resize(static_cast<std::size_t>(length_), pad_id);
    return v;
  }

  // (B, length) int64.
  torch::Tensor encode(const std::vector<std::string>& texts) const {
    auto out = torch::empty({static_cast<std::int64_t>(texts.size()), length_}, torch::kLong);
    auto* p = out.data_ptr<std::int64_t>();
    for (const auto& t : texts)
      for (int id : ids(t)) *p++ = id;
    return out;
  }

  std::string decode(const std::vector<int>& ids) const {
    std::vector<int> kept;
    for (int i : ids)
      if (i != pad_id && i != eos_id) kept.push_back(i);
    return sp_->decode(kept);
  }

 private:
  std::shared_ptr<SentencePieceProcessor> sp_;
  int length_;
};

}  // namespace diffuse::encoders
