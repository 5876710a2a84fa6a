#pragma once
// SD3's conditioning from per-encoder outputs (SD3_FACTS (c), "Tokenizers and text-stack
// assembly"): context = [CLIP-L seq | CLIP-G seq] zero-padded to the T5 width, followed by the
// T5 sequence on the token axis; pooled = [CLIP-L pooled | CLIP-G pooled]. Any encoder may be
// absent, and is then replaced by zeros of its shape (as stable-diffusion.cpp does, and as
// training-time encoder dropout is believed to look), so a caller can drop an encoder at inference.
#include <optional>

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "diffuse/core/error.hpp"
#include "diffuse/core/format.hpp"
#include "diffuse/sampling/guidance.hpp"

namespace diffuse::sampling {

struct EncoderOutputs {
  std::optional<torch::Tensor> clip_l_hidden, clip_l_pooled;  // (B, 77, 768), (B, 768)
  std::optional<torch::Tensor> clip_g_hidden, clip_g_pooled;  // (B, 77, 1280), (B, 1280)
  std::optional<torch::Tensor> t5_hidden;                     // (B, T, 4096)
};

struct SD3ConditioningShape {
  std::int64_t clip_tokens = 77, clip_l_width = 768, clip_g_width = 1280;
  std::int64_t t5_tokens = 77, t5_width = 4096;
};

inline Conditioning assemble_sd3_conditioning(const EncoderOutputs& e, std::int64_t batch,
                                              const SD3ConditioningShape& s = {},
                                              torch::TensorOptions opts = torch::kFloat32) {
  auto get = [&](const std::optional<torch::Tensor>& t, std::vector<std::int64_t> shape, const char* what) {
    if (!t) return torch::zeros(shape, opts);
    if (t->sizes().vec() != shape)
      throw InputError(std::string("SD3 conditioning: ") + what + " must be " + format_shape(shape) + ", got " +
                       format_shape(t->sizes().vec()));
    return t->to(opts);
  };
  const auto l = get(e.clip_l_hidden, {batch, s.clip_tokens, s.clip_l_width}, "CLIP-L hidden states");
  const auto g = get(e.clip_g_hidden, {batch, s.clip_tokens, s.clip_g_width}, "CLIP-G hidden states");
  auto t5_tokens = e.t5_hidden ? e.t5_hidden->size(1) : s.t5_tokens;
  const auto t5 = get(e.t5_hidden, {batch, t5_tokens, s.t5_width}, "T5 hidden states");
  auto lg = torch::cat({l, g}, -1);  // (B, 77, 2048)
  if (lg.size(-1) > s.t5_width) throw InputError("SD3 conditioning: CLIP widths exceed the T5 width");
  lg = torch::constant_pad_nd(lg, {0, s.t5_width - lg.size(-1)});  // (B, 77, 4096)
  const auto pooled = torch::cat({get(e.clip_l_pooled, {batch, s.clip_l_width}, "CLIP-L pooled"),
                                  get(e.clip_g_pooled, {batch, s.clip_g_width}, "CLIP-G pooled")}, -1);
  return {torch::cat({lg, t5}, 1), pooled};  // (B, 77 + T, 4096), (B, 2048)
}

// Training-time encoder dropout (SD3 paper, section 5.3: each of the three encoders dropped
// independently, 46.4% each): with probability `rate` per example and encoder, that encoder's
// slices of an assembled context (CLIP-L / CLIP-G columns of the first clip_tokens tokens, or the
// T5 tokens after them) and of the pooled vector become zeros, as if it were absent. Returns new
// tensors; the inputs are left as they are.
inline void drop_sd3_encoders(torch::Tensor& context, torch::Tensor& pooled, const SD3ConditioningShape& s, double rate,
                              at::Generator& gen) {
  const auto b = context.size(0);
  auto keep = [&] { return (torch::rand({b}, gen) >= rate).to(context.scalar_type()); };
  const auto kl = keep(), kg = keep(), kt = keep();
  context = context.clone();
  pooled = pooled.clone();
  auto clip = context.narrow(1, 0, s.clip_tokens);
  clip.narrow(2, 0, s.clip_l_width).mul_(kl.view({b, 1, 1}));
  clip.narrow(2, s.clip_l_width, s.clip_g_width).mul_(kg.view({b, 1, 1}));
  context.narrow(1, s.clip_tokens, context.size(1) - s.clip_tokens).mul_(kt.view({b, 1, 1}));
  pooled.narrow(1, 0, s.clip_l_width).mul_(kl.view({b, 1}));
  pooled.narrow(1, s.clip_l_width, s.clip_g_width).mul_(kg.view({b, 1}));
}

}  // namespace diffuse::sampling
