// A C-ABI shim around Debian's libsentencepiece, loaded at run time by
// include/diffuse/encoders/sentencepiece.hpp with dlmopen(LM_ID_NEWLM).
//
// Why: libsentencepiece.so bundles protobuf 3.14 and exports its symbols; libtorch loads
// protobuf 3.21. Linked into one binary the two interpose and the process crashes before main.
// In a link-map namespace of its own this module and its sentencepiece see only their own protobuf.
// Only plain C types cross the boundary, so no C++ ABI or allocator is shared.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {
void set_error(char* err, std::size_t cap, const std::string& msg) {
  if (!err || cap == 0) return;
  std::size_t n = msg.size() < cap - 1 ? msg.size() : cap - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}
}  // namespace

extern "C" {

typedef void (*diffuse_spm_id_sink)(void* ctx, const int* ids, std::size_t n);
typedef void (*diffuse_spm_text_sink)(void* ctx, const char* text, std::size_t n);

__attribute__((visibility("default"))) int diffuse_spm_abi_version() { return 2; }

__attribute__((visibility("default"))) void* diffuse_spm_load(const char* model_path, char* err, std::size_t errcap) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(model_path);
  if (!status.ok()) {
    set_error(err, errcap, status.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

__attribute__((visibility("default"))) void diffuse_spm_free(void* handle) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

__attribute__((visibility("default"))) int diffuse_spm_vocab_size(void* handle) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize();
}

__attribute__((visibility("default"))) int diffuse_spm_special_id(void* handle, int which) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
  switch (which) {
    case 0: return sp->unk_id();
    case 1: return sp->bos_id();
    case 2: return sp->eos_id();
    case 3: return sp->pad_id();
    default: return -1;
  }
}

__attribute__((visibility("default"))) int diffuse_spm_encode(void* handle, const char* text, std::size_t len,
                                                              diffuse_spm_id_sink sink, void* ctx, char* err,
                                                              std::size_t errcap) {
  std::vector<int> ids;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(std::string(text, len), &ids);
  if (!status.ok()) {
    set_error(err, errcap, status.ToString());
    return 1;
  }
  sink(ctx, ids.data(), ids.size());
  return 0;
}

__attribute__((visibility("default"))) int diffuse_spm_decode(void* handle, const int* ids, std::size_t n,
                                                              diffuse_spm_text_sink sink, void* ctx, char* err,
                                                              std::size_t errcap) {
  std::string text;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(std::vector<int>(ids, ids + n), &text);
  if (!status.ok()) {
    set_error(err, errcap, status.ToString());
    return 1;
  }
  sink(ctx, text.data(), text.size());
  return 0;
}

// `args` in sentencepiece's trainer flag syntax, e.g. "--input=a.txt --model_prefix=m --vocab_size=64".
__attribute__((visibility("default"))) int diffuse_spm_train(const char* args, char* err, std::size_t errcap) {
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) {
    set_error(err, errcap, status.ToString());
    return 1;
  }
  return 0;
}

// Trains on `n` sentences held in memory and hands the serialized model to `sink`: no input file
// and no model prefix, so the model records no paths and the same sentences and flags give the
// same bytes wherever the run's folder is.
__attribute__((visibility("default"))) int diffuse_spm_train_sentences(const char* args, const char* const* sentences,
                                                                       const std::size_t* lengths, std::size_t n,
                                                                       diffuse_spm_text_sink sink, void* ctx, char* err,
                                                                       std::size_t errcap) {
  class Sentences : public sentencepiece::SentenceIterator {
   public:
    Sentences(const char* const* s, const std::size_t* len, std::size_t n) : s_(s), len_(len), n_(n) { load(); }
    bool done() const override { return i_ >= n_; }
    void Next() override {
      ++i_;
      load();
    }
    const std::string& value() const override { return value_; }
    sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }  // OK

   private:
    void load() {
      if (i_ < n_) value_.assign(s_[i_], len_[i_]);
    }
    const char* const* s_;
    const std::size_t* len_;
    std::size_t n_, i_ = 0;
    std::string value_;
  } it(sentences, lengths, n);
  // Flags as a map: the string overload logs "Running command: ..." before it reads --minloglevel.
  std::unordered_map<std::string, std::string> flags;
  const std::string all(args);
  for (std::size_t i = 0; i < all.size();) {
    const std::size_t end = std::min(all.find(' ', i), all.size());
    std::string flag = all.substr(i, end - i);
    i = end + 1;
    if (flag.empty()) continue;
    if (flag.rfind("--", 0) == 0) flag.erase(0, 2);
    const std::size_t eq = flag.find('=');
    flags[flag.substr(0, eq)] = eq == std::string::npos ? "true" : flag.substr(eq + 1);
  }
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(flags, &it, &model);
  if (!status.ok()) {
    set_error(err, errcap, status.ToString());
    return 1;
  }
  sink(ctx, model.data(), model.size());
  return 0;
}

}  // extern "C"
