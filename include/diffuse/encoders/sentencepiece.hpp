#pragma once
// SentencePiece (T5's tokenizer; tokenizer training for the shapes task) through the
// `diffuse_sentencepiece` shim module (torch-free).
//
// libsentencepiece cannot share a process with libtorch when linked normally (both carry
// protobuf; see docs/dependencies.md), so the library is reached through a small module loaded
// with dlmopen(LM_ID_NEWLM): a link-map namespace of its own, where sentencepiece finds its own
// protobuf and its own libstdc++. (RTLD_DEEPBIND also isolates protobuf, but then the module's
// std::cerr is libstdc++'s unconstructed copy and sentencepiece's first log line crashes.) Only C
// types cross the boundary, and results are copied out through callbacks, so the two heaps never
// free each other's memory. The module path comes, in order, from the
// constructor argument, the DIFFUSE_SENTENCEPIECE_SHIM environment variable, or the path the
// CMake package compiled in.
#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <map>
#include <mutex>
#include <string_view>
#include <vector>

#include "diffuse/core/error.hpp"

namespace diffuse::encoders {

class SentencePieceLibrary {
 public:
  explicit SentencePieceLibrary(std::string path = {}) {
    if (path.empty())
      if (const char* env = std::getenv("DIFFUSE_SENTENCEPIECE_SHIM")) path = env;
#ifdef DIFFUSE_SENTENCEPIECE_SHIM
    if (path.empty()) path = DIFFUSE_SENTENCEPIECE_SHIM;
#endif
    if (path.empty())
      throw Error(
          "sentencepiece: no shim module configured; link diffuse::diffuse from CMake or set "
          "DIFFUSE_SENTENCEPIECE_SHIM to libdiffuse_sentencepiece.so");
    handle_ = ::dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_) throw Error("sentencepiece: cannot load shim " + path + ": " + ::dlerror());
    path_ = path;
    bind(abi_version, "diffuse_spm_abi_version");
    if (abi_version() != 2)
      throw Error("sentencepiece: shim " + path + " has ABI version " + std::to_string(abi_version()) +
                  ", this diffuse needs 2 (rebuild or reinstall the shim with it)");
    bind(load, "diffuse_spm_load");
    bind(free, "diffuse_spm_free");
    bind(vocab_size, "diffuse_spm_vocab_size");
    bind(special_id, "diffuse_spm_special_id");
    bind(encode, "diffuse_spm_encode");
    bind(decode, "diffuse_spm_decode");
    bind(train_fn, "diffuse_spm_train");
    bind(train_sentences_fn, "diffuse_spm_train_sentences");
  }
  SentencePieceLibrary(const SentencePieceLibrary&) = delete;
  SentencePieceLibrary& operator=(const SentencePieceLibrary&) = delete;
  ~SentencePieceLibrary() {
    if (handle_) ::dlclose(handle_);
  }
  const std::string& path() const { return path_; }

  // The process's one instance for `path` (empty: the configured shim). Each dlmopen namespace
  // carries its own libc, whose static TLS is a fixed pool: loading the shim afresh for every
  // tokenizer exhausts it after a handful ("cannot allocate memory in static TLS block"), so the
  // module is loaded once and kept for the life of the process.
  static std::shared_ptr<const SentencePieceLibrary> shared(const std::string& path = {}) {
    static std::mutex m;
    static std::map<std::string, std::shared_ptr<const SentencePieceLibrary>> loaded;
    std::lock_guard<std::mutex> lock(m);
    auto& slot = loaded[path];
    if (!slot) slot = std::make_shared<const SentencePieceLibrary>(path);
    return slot;
  }

  // Trains a model with sentencepiece's trainer flags ("--input=... --model_prefix=... --vocab_size=...").
  void train(const std::string& args) const {
    char err[1024] = {0};
    if (train_fn(args.c_str(), err, sizeof err) != 0) throw InputError(std::string("sentencepiece training: ") + err);
  }

  // Trains on sentences in memory and returns the serialized model (flags as above, space-separated
  // "--name=value" with no spaces in values, without --input and --model_prefix): the model
  // records no paths, so it depends only on the sentences and the flags.
  std::string train(const std::vector<std::string>& sentences, const std::string& args) const {
    std::vector<const char*> p;
    std::vector<std::size_t> n;
    for (const auto& s : sentences) p.push_back(s.data()), n.push_back(s.size());
    std::string model;
    char err[1024] = {0};
    auto sink = [](void* ctx, const char* b, std::size_t len) { static_cast<std::string*>(ctx)->assign(b, len); };
    if (train_sentences_fn(args.c_str(), p.data(), n.data(), p.size(), sink, &model, err, sizeof err) != 0)
      throw InputError(std::string("sentencepiece training: ") + err);
    return model;
  }

  using IdSink = void (*)(void*, const int*, std::size_t);
  using TextSink = void (*)(void*, const char*, std::size_t);
  int (*abi_version)() = nullptr;
  void* (*load)(const char*, char*, std::size_t) = nullptr;
  void (*free)(void*) = nullptr;
  int (*vocab_size)(void*) = nullptr;
  int (*special_id)(void*, int) = nullptr;
  int (*encode)(void*, const char*, std::size_t, IdSink, void*, char*, std::size_t) = nullptr;
  int (*decode)(void*, const int*, std::size_t, TextSink, void*, char*, std::size_t) = nullptr;
  int (*train_fn)(const char*, char*, std::size_t) = nullptr;
  int (*train_sentences_fn)(const char*, const char* const*, const std::size_t*, std::size_t, TextSink, void*, char*,
                            std::size_t) = nullptr;

 private:
  template <class F>
  void bind(F& f, const char* name) {
    f = reinterpret_cast<F>(::dlsym(handle_, name));
    if (!f) throw Error("sentencepiece: shim " + path_ + " lacks symbol " + name);
  }
  void* handle_ = nullptr;
  std::string path_;
};

// A loaded SentencePiece model (e.g. T5's spiece.model).
class SentencePieceProcessor {
 public:
  explicit SentencePieceProcessor(const std::filesystem::path& model,
                                  std::shared_ptr<const SentencePieceLibrary> lib = nullptr)
      : lib_(lib ? std::move(lib) : SentencePieceLibrary::shared()) {
    if (!std::filesystem::is_regular_file(model))
      throw InputError(model.string() + ": SentencePiece model file not found");
    char err[1024] = {0};
    model_ = lib_->load(model.c_str(), err, sizeof err);
    if (!model_) throw InputError(model.string() + ": cannot load SentencePiece model: " + err);
  }
  SentencePieceProcessor(const SentencePieceProcessor&) = delete;
  SentencePieceProcessor& operator=(const SentencePieceProcessor&) = delete;
  ~SentencePieceProcessor() {
    if (model_) lib_->free(model_);
  }

  std::vector<int> encode(std::string_view text) const {
    std::vector<int> ids;
    char err[1024] = {0};
    auto sink = [](void* ctx, const int* p, std::size_t n) { static_cast<std::vector<int>*>(ctx)->assign(p, p + n); };
    if (lib_->encode(model_, text.data(), text.size(), sink, &ids, err, sizeof err) != 0)
      throw InputError(std::string("sentencepiece encode: ") + err);
    return ids;
  }
  std::string decode(const std::vector<int>& ids) const {
    std::string text;
    char err[1024] = {0};
    auto sink = [](void* ctx, const char* p, std::size_t n) { static_cast<std::string*>(ctx)->assign(p, n); };
    if (lib_->decode(model_, ids.data(), ids.size(), sink, &text, err, sizeof err) != 0)
      throw InputError(std::string("sentencepiece decode: ") + err);
    return text;
  }
  int vocab_size() const { return lib_->vocab_size(model_); }
  int unk_id() const { return lib_->special_id(model_, 0); }
  int bos_id() const { return lib_->special_id(model_, 1); }
  int eos_id() const { return lib_->special_id(model_, 2); }
  int pad_id() const { return lib_->special_id(model_, 3); }

 private:
  std::shared_ptr<const SentencePieceLibrary> lib_;
  void* model_ = nullptr;
};

}  // namespace diffuse::encoders
