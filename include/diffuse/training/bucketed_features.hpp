#pragma once
// A captioned-image dataset cut to aspect-ratio buckets and encoded once (SD3 paper, section 5.1:
// latents and text features precomputed; appendix: training at mixed aspect ratios, each batch of
// one size). Images go to the bucket nearest their aspect ratio (data/aspect_buckets.hpp), centre
// cropped and resized; an unreadable item is reported and skipped. Used by both trainers: the
// LoRA fine-tuner encodes in memory, the model trainer keeps the result as a feature cache file.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "diffuse/core/error.hpp"
#include "diffuse/data/aspect_buckets.hpp"
#include "diffuse/data/dataset.hpp"
#include "diffuse/encoders/caption_encoder.hpp"
#include "diffuse/io/image_tensor.hpp"
#include "diffuse/io/safetensors.hpp"

namespace diffuse::training {

struct FeatureBucket {
  data::Bucket bucket;
  torch::Tensor latents, context, pooled;  // float32, one row per example
  std::int64_t size() const { return latents.size(0); }
};

struct BucketedFeatures {
  std::vector<FeatureBucket> buckets;     // non-empty buckets only
  std::vector<data::SkippedFile> skipped;  // what could not be used, in the dataset's order
  std::int64_t examples() const {
    std::int64_t n = 0;
    for (const auto& b : buckets) n += b.size();
    return n;
  }
  // Each bucket's share of the examples, the chance a batch is drawn from it.
  torch::Tensor weights() const {
    std::vector<double> w;
    for (const auto& b : buckets) w.push_back(static_cast<double>(b.size()));
    return torch::tensor(w, torch::kFloat64);
  }
  // The bucket with the most examples (the first of equals).
  const FeatureBucket& largest() const {
    return *std::max_element(buckets.begin(), buckets.end(), [](const auto& a, const auto& b) { return a.size() < b.size(); });
  }
};

// The buckets of area ~resolution^2 on a `multiple`-pixel grid, ratio <= max_aspect, whose patch
// grid (side / multiple) fits a positional table of `table` patches a side (the crop the MM-DiT
// takes for a bucket must lie inside its table). `who` names the caller in errors.
inline std::vector<data::Bucket> usable_buckets(int resolution, int multiple, int table, double max_aspect,
                                                const std::string& who) {
  if (resolution < multiple || resolution % multiple != 0)
    throw InputError(who + ": resolution " + std::to_string(resolution) + " must be a positive multiple of " + std::to_string(multiple) +
                     " (autoencoder factor x patch)");
  if (resolution / multiple > table)
    throw InputError(who + ": resolution " + std::to_string(resolution) + " needs " + std::to_string(resolution / multiple) +
                     " patches a side; the model's positional table has " + std::to_string(table));
  std::vector<data::Bucket> out;
  for (const auto& b : data::aspect_buckets(resolution, multiple, max_aspect))
    if (b.width / multiple <= table && b.height / multiple <= table) out.push_back(b);
  return out;
}

// Encodes `data` into `buckets`: `encode_images` maps (B, 3, H, W) in [-1, 1] to latents,
// `encode_text` captions to features; both are called in groups of 8 examples of one bucket.
// `log` hears each skipped item and each bucket's count. Throws InputError when nothing is usable.
template <data::CaptionedImages Data, class EncodeImages, class EncodeText>
BucketedFeatures encode_in_buckets(const Data& data, const std::vector<data::Bucket>& buckets, const EncodeImages& encode_images,
                                   const EncodeText& encode_text, const std::function<void(const std::string&)>& log,
                                   const std::string& who) {
  BucketedFeatures out;
  if constexpr (requires { data.skipped(); }) {  // what the dataset's own scan skipped comes first, in its order
    for (const auto& s : data.skipped()) {
      if (log) log("skipped: " + s.file + ": " + s.reason);
      out.skipped.push_back(s);
    }
  }
  std::vector<std::vector<std::pair<io::RGBImage, std::string>>> by_bucket(buckets.size());
  for (std::size_t i = 0; i < data.size(); ++i) {
    try {
      auto img = data.image(i);
      const auto k = data::nearest_bucket(buckets, static_cast<int>(img.shape(1)), static_cast<int>(img.shape(0)));
      by_bucket[k].emplace_back(data::fit_to_bucket(img, buckets[k]), data.caption(i));
    } catch (const InputError& e) {
      out.skipped.push_back({"item " + std::to_string(i), e.what()});
      if (log) log(std::string("skipped: ") + e.what());
    }
  }
  torch::NoGradGuard g;
  for (std::size_t k = 0; k < buckets.size(); ++k) {
    if (by_bucket[k].empty()) continue;
    FeatureBucket b{buckets[k], {}, {}, {}};
    std::vector<torch::Tensor> lat, ctx, pooled;
    for (std::size_t lo = 0; lo < by_bucket[k].size(); lo += 8) {
      const auto hi = std::min(by_bucket[k].size(), lo + 8);
      std::vector<torch::Tensor> imgs;
      std::vector<std::string> caps;
      for (std::size_t i = lo; i < hi; ++i) imgs.push_back(io::from_rgb(by_bucket[k][i].first)), caps.push_back(by_bucket[k][i].second);
      lat.push_back(encode_images(torch::stack(imgs)).to(torch::kFloat32).contiguous());
      const encoders::TextFeatures f = encode_text(caps);
      ctx.push_back(f.context.to(torch::kFloat32)), pooled.push_back(f.pooled.to(torch::kFloat32));
    }
    b.latents = torch::cat(lat), b.context = torch::cat(ctx), b.pooled = torch::cat(pooled);
    if (log) log("bucket " + std::to_string(b.bucket.width) + "x" + std::to_string(b.bucket.height) + ": " + std::to_string(b.size()) + " images");
    out.buckets.push_back(std::move(b));
  }
  if (out.buckets.empty())
    throw InputError(who + ": no usable images (" + std::to_string(out.skipped.size()) + " skipped" +
                     (out.skipped.empty() ? std::string() : ", first: " + out.skipped.front().file + ": " + out.skipped.front().reason) +
                     ")");
  return out;
}

// One file for all buckets: tensors "<W>x<H>.latents" / ".context" / ".pooled".
inline void save_bucketed_features(const std::filesystem::path& path, const BucketedFeatures& f,
                                   const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, torch::Tensor>> t;
  for (const auto& b : f.buckets) {
    const auto name = std::to_string(b.bucket.width) + "x" + std::to_string(b.bucket.height);
    t.emplace_back(name + ".latents", b.latents), t.emplace_back(name + ".context", b.context), t.emplace_back(name + ".pooled", b.pooled);
  }
  io::save_safetensors(path, t, metadata);
}

// The buckets of a file written by save_bucketed_features, as zero-copy views of its mapping.
inline BucketedFeatures load_bucketed_features(const io::SafetensorsFile& f) {
  BucketedFeatures out;
  for (const auto& t : f.tensors()) {
    const auto dot = t.name.find('.'), x = t.name.find('x');
    if (dot == std::string::npos || x == std::string::npos || x > dot || t.name.substr(dot) != ".latents") continue;
    FeatureBucket b;
    try {
      b.bucket = {std::stoi(t.name.substr(0, x)), std::stoi(t.name.substr(x + 1, dot - x - 1))};
    } catch (const std::exception&) {
      throw InputError(f.path() + ": feature cache tensor '" + t.name + "' does not name a bucket (WxH)");
    }
    const auto name = t.name.substr(0, dot);
    for (const char* part : {".context", ".pooled"})
      if (!f.contains(name + part)) throw InputError(f.path() + ": feature cache lacks " + name + part);
    b.latents = io::load_tensor(f, t.name), b.context = io::load_tensor(f, name + ".context"), b.pooled = io::load_tensor(f, name + ".pooled");
    if (b.context.size(0) != b.size() || b.pooled.size(0) != b.size())
      throw InputError(f.path() + ": feature cache bucket " + name + " has unequal example counts");
    out.buckets.push_back(std::move(b));
  }
  if (out.buckets.empty()) throw InputError(f.path() + ": feature cache holds no buckets");
  return out;
}

}  // namespace diffuse::training
