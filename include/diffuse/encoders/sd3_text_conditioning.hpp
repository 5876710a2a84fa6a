#pragma once
// SD3's text stack as a conditioning-encoder policy: CLIP-L, OpenCLIP bigG and T5-XXL, each
// optional, assembled as SD3 does (SD3_FACTS (c), "Tokenizers and text-stack assembly"):
//   context = [CLIP-L penultimate (77x768) | CLIP-G penultimate (77x1280)] zero-padded to 4096,
//             followed by T5's last hidden states (T x 4096)              -> (B, 77 + T, 4096)
//   pooled  = [CLIP-L pooled, unprojected (768) | CLIP-G pooled, projected (1280)] -> (B, 2048)
// A missing encoder contributes zeros of its shape (stable-diffusion.cpp's behaviour, and what
// training-time encoder dropout is believed to look like). The empty prompt is encoded like any
// other (the reference's negative prompt). Only the first 77-token CLIP chunk is used, as SD3 does.
//
// T5 length: 77 by default (the paper's 77 + 77 = 154 tokens; a longer prompt is cut with EOS
// kept last); 0 follows the reference (max(77, tokens), the batch padded to its longest); any
// other N pads or cuts to N (diffusers uses 256).
#include <array>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "diffuse/core/hash.hpp"
#include "diffuse/encoders/caption_encoder.hpp"  // TextFeatures
#include "diffuse/encoders/clip_text_model.hpp"
#include "diffuse/encoders/clip_tokenizer.hpp"
#include "diffuse/encoders/t5_encoder.hpp"
#include "diffuse/encoders/t5_tokenizer.hpp"
#include "diffuse/io/model_family.hpp"
#include "diffuse/sampling/conditioning.hpp"

namespace diffuse::encoders {

// Where the encoders and tokenizers are. Weight files may be separate (clip_l.safetensors, ...),
// one file holding several (SD3's all-in-one checkpoint), or a folder of shards (diffusers'
// text_encoder_3/); empty: that encoder is absent.
struct SD3TextSources {
  std::string clip_l, clip_g, t5;
  // A folder with bpe_simple_vocab_16e6.txt.gz and spiece.model, or with the diffusers tokenizer
  // folders (tokenizer/ and tokenizer_3/), or a diffusers model folder holding those.
  std::string tokenizers;
  std::string clip_tokenizer, t5_tokenizer;  // explicit files or folders; override `tokenizers`
};

struct SD3TextOptions {
  int t5_length = 77;
  double drop_rate = 0.464;  // per encoder, independently (SD3 paper section 5.3: ~10% all dropped)
  torch::ScalarType dtype = torch::kFloat32;  // T5 in float16 overflows; float32 is the safe default
  std::optional<CLIPTextConfig> clip_l_config, clip_g_config;  // heads/activation when not a known size
  std::optional<T5Config> t5_config;
  sampling::SD3ConditioningShape shape;  // widths used for absent encoders (SD3's by default)
};

class SD3TextConditioning {
 public:
  static constexpr std::string_view name = "sd3-text";

  static SD3TextConditioning load(const SD3TextSources& s, const SD3TextOptions& o = {}) {
    SD3TextConditioning c;
    c.options_ = o;
    if (o.t5_length < 0) throw InputError("SD3 text stack: T5 length must be 0 (as the reference) or positive");
    if (!s.clip_l.empty()) c.clip_l_ = load_clip(s.clip_l, "clip_l", o.clip_l_config, o.dtype);
    if (!s.clip_g.empty()) c.clip_g_ = load_clip(s.clip_g, "clip_g", o.clip_g_config, o.dtype);
    if (!s.t5.empty()) {
      io::WeightFiles f(s.t5);
      c.t5_ = load_t5_encoder(f, find_prefix(f, io::ComponentKind::T5Encoder, "t5"), o.t5_config, o.dtype);
    }
    if (c.clip_l_ || c.clip_g_) c.clip_tok_ = std::make_shared<ClipTokenizer>(clip_tokenizer_path(s));
    if (c.t5_) c.t5_tok_ = std::make_shared<T5Tokenizer>(t5_tokenizer_path(s));
    auto& sh = c.options_.shape;
    if (c.clip_l_) sh.clip_l_width = (*c.clip_l_)->config().width;
    if (c.clip_g_) sh.clip_g_width = (*c.clip_g_)->config().width;
    if (c.t5_) sh.t5_width = (*c.t5_)->config().d_model;
    sh.t5_tokens = o.t5_length > 0 ? o.t5_length : 77;
    for (const auto* f : {&s.clip_l, &s.clip_g, &s.t5}) c.files_.push_back(*f);
    return c;
  }

  // Per-encoder outputs of SD3's text stack for `prompts` (absent encoders stay empty).
  sampling::EncoderOutputs encode_parts(const std::vector<std::string>& prompts) const {
    torch::NoGradGuard g;
    sampling::EncoderOutputs e;
    const auto b = static_cast<std::int64_t>(prompts.size());
    auto clip_tokens = [&](std::int64_t pad) {
      auto t = torch::empty({b, ClipTokenizer::kContextLength}, torch::kLong);
      for (std::int64_t i = 0; i < b; ++i) {
        const auto ids = clip_tok_->sd3_chunks(prompts[static_cast<std::size_t>(i)], pad).front().ids;
        t[i].copy_(torch::tensor(ids, torch::kLong));
      }
      return t;
    };
    if (clip_l_) {
      const auto out = (*clip_l_)->forward(clip_tokens(clip_tok_->eos_id()));
      e.clip_l_hidden = out.penultimate().to(torch::kFloat32);
      e.clip_l_pooled = out.pooled.to(torch::kFloat32);  // SD3 uses CLIP-L's pooled output unprojected
    }
    if (clip_g_) {
      const auto out = (*clip_g_)->forward(clip_tokens(0));
      e.clip_g_hidden = out.penultimate().to(torch::kFloat32);
      e.clip_g_pooled = (out.pooled_projected.defined() ? out.pooled_projected : out.pooled).to(torch::kFloat32);
    }
    if (t5_) e.t5_hidden = (*t5_)->forward(t5_tokens(prompts)).last_hidden.to(torch::kFloat32);
    return e;
  }

  // T5 token rows for `prompts` under the configured length rule.
  torch::Tensor t5_tokens(const std::vector<std::string>& prompts) const {
    if (!t5_tok_) throw Error("SD3 text stack: no T5 tokenizer (T5 is absent)");
    std::vector<std::vector<std::int64_t>> rows;
    std::size_t longest = 0;
    for (const auto& p : prompts) {
      auto ids = t5_tok_->sd3_tokens(p).ids;
      const int n = options_.t5_length;
      if (n > 0) {
        if (ids.size() > static_cast<std::size_t>(n)) {
          ids.resize(static_cast<std::size_t>(n));
          ids.back() = T5Tokenizer::kEos;
        }
        ids.resize(static_cast<std::size_t>(n), T5Tokenizer::kPad);
      }
      longest = std::max(longest, ids.size());
      rows.push_back(std::move(ids));
    }
    auto t = torch::zeros({static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(longest)}, torch::kLong);
    for (std::size_t i = 0; i < rows.size(); ++i)
      t[static_cast<std::int64_t>(i)].narrow(0, 0, static_cast<std::int64_t>(rows[i].size())).copy_(torch::tensor(rows[i], torch::kLong));
    return t;
  }

  // context (B, 77 + T, 4096) and pooled (B, 2048), float32.
  TextFeatures encode(const std::vector<std::string>& prompts) const {
    const auto parts = encode_parts(prompts);
    auto shape = options_.shape;
    if (parts.t5_hidden) shape.t5_tokens = parts.t5_hidden->size(1);
    const auto c = sampling::assemble_sd3_conditioning(parts, static_cast<std::int64_t>(prompts.size()), shape);
    return {c.context, c.pooled};
  }

  // Training-time dropout, each encoder independently with probability `rate`
  // (sampling::drop_sd3_encoders).
  void apply_dropout(torch::Tensor& context, torch::Tensor& pooled, double rate, at::Generator& gen) const {
    sampling::drop_sd3_encoders(context, pooled, options_.shape, rate, gen);
  }
  double drop_rate() const { return options_.drop_rate; }
  // Widths and token counts of the assembled features (T5's: the configured length).
  const sampling::SD3ConditioningShape& shape() const { return options_.shape; }

  int width() const { return static_cast<int>(options_.shape.t5_width); }  // context width
  int pooled_width() const { return static_cast<int>(options_.shape.clip_l_width + options_.shape.clip_g_width); }
  int length() const { return static_cast<int>(options_.shape.clip_tokens + options_.shape.t5_tokens); }
  bool has_clip_l() const { return clip_l_.has_value(); }
  bool has_clip_g() const { return clip_g_.has_value(); }
  bool has_t5() const { return t5_.has_value(); }
  const ClipTokenizer* clip_tokenizer() const { return clip_tok_.get(); }
  const T5Tokenizer* t5_tokenizer() const { return t5_tok_.get(); }

  // Identity of the weights and settings (for feature caches): each weight file's size and
  // safetensors header (names, dtypes, offsets), plus the options that change the output. Not the
  // gigabytes of data: reading T5-XXL to key a cache would take longer than most uses of it.
  std::string fingerprint() const {
    Fingerprint f;
    f.add(name);
    for (const auto& path : files_) {
      f.add(path.empty() ? std::string("absent") : std::string("present"));
      if (path.empty()) continue;
      io::WeightFiles files(path);
      for (const auto& file : files.files()) {
        f.add(std::to_string(std::filesystem::file_size(file.path())));
        for (const auto& t : file.tensors()) f.add(t.name).add(format_shape(t.shape)).add(std::to_string(t.begin));
      }
    }
    f.add(std::to_string(options_.t5_length)).add(std::to_string(static_cast<int>(options_.dtype)));
    return f.hex();
  }

 private:
  SD3TextConditioning() = default;

  // The key prefix of the component of `kind` in `f`; with several, the one whose prefix names the role.
  static std::string find_prefix(const io::WeightFiles& f, io::ComponentKind kind, const std::string& role) {
    std::vector<io::Component> found;
    for (auto& c : io::detect_components(f.tensors()))
      if (c.kind == kind) found.push_back(c);
    if (found.empty())
      throw InputError(f.path() + ": holds no " + std::string(io::to_string(kind)) + " (given as the " + role + " encoder)");
    if (found.size() == 1) return found[0].prefix;
    for (const auto& c : found)
      if (c.prefix.find(role) != std::string::npos) return c.prefix;
    // Diffusers / width conventions: CLIP-L is 768 wide, bigG 1280.
    for (const auto& c : found)
      if ((role == "clip_l" && c.sizes.at("width") == 768) || (role == "clip_g" && c.sizes.at("width") == 1280)) return c.prefix;
    std::string list;
    for (const auto& c : found) list += " '" + c.prefix + "'";
    throw InputError(f.path() + ": several " + std::string(io::to_string(kind)) + "s (" + list + " ); cannot tell which is " + role);
  }

  static CLIPTextModel load_clip(const std::string& path, const std::string& role, std::optional<CLIPTextConfig> cfg,
                                 torch::ScalarType dtype) {
    io::WeightFiles f(path);
    const auto prefix = find_prefix(f, io::ComponentKind::CLIPText, role);
    if (!cfg) {
      cfg = detect_clip_config(f.header(), prefix, f.path());
      cfg->activation = role == "clip_g" ? "gelu" : "quick_gelu";  // bigG uses GELU, CLIP-L quick-GELU
    }
    return load_clip_text_model(f, prefix, cfg, dtype);
  }

  static std::filesystem::path clip_tokenizer_path(const SD3TextSources& s) {
    namespace fs = std::filesystem;
    if (!s.clip_tokenizer.empty()) return s.clip_tokenizer;
    if (s.tokenizers.empty())
      throw InputError(std::string("SD3 text stack: no CLIP tokenizer given (--tokenizers DIR). ") + ClipTokenizer::kWhereFrom);
    const fs::path d = s.tokenizers;
    if (fs::is_directory(d / "tokenizer")) return d / "tokenizer";
    return d;
  }
  static std::filesystem::path t5_tokenizer_path(const SD3TextSources& s) {
    namespace fs = std::filesystem;
    if (!s.t5_tokenizer.empty()) return s.t5_tokenizer;
    if (s.tokenizers.empty())
      throw InputError(std::string("SD3 text stack: no T5 tokenizer given (--tokenizers DIR). ") + T5Tokenizer::kWhereFrom);
    const fs::path d = s.tokenizers;
    if (fs::is_directory(d / "tokenizer_3")) return d / "tokenizer_3";
    return d;
  }

  SD3TextOptions options_;
  mutable std::optional<CLIPTextModel> clip_l_, clip_g_;
  mutable std::optional<T5Encoder> t5_;
  std::shared_ptr<ClipTokenizer> clip_tok_;
  std::shared_ptr<T5Tokenizer> t5_tok_;
  std::vector<std::string> files_;
};

}  // namespace diffuse::encoders
