#pragma once
// Precomputed features (SD3 paper, section 5.1 and Table 7): the dataset's latents and text
// features are encoded once into a safetensors file and training reads them memory-mapped, so a
// step does no rendering, no autoencoder and no text-encoder work. The file name and metadata
// carry a key made from the encoders' fingerprints (their weights' contents) and the data
// description, so changing any of them can never pick up a stale cache.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "diffuse/core/hash.hpp"
#include "diffuse/data/image_folder.hpp"
#include "diffuse/data/shapes_dataset.hpp"
#include "diffuse/encoders/caption_encoder.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/pipeline/images.hpp"
#include "diffuse/training/bucketed_features.hpp"

namespace diffuse::training {

struct ShapesDataSpec {
  int image_size = 32;
  std::uint64_t seed = 0;
  std::int64_t first = 0, count = 0;  // example indices [first, first + count) of the train split
};

struct FeatureCache {
  std::string key, path;
  torch::Tensor latents;  // (N, C, h, w)
  torch::Tensor context;  // (N, L, width)
  torch::Tensor pooled;   // (N, width)
  std::int64_t size() const { return latents.size(0); }
};

// The examples' captions and images, rendered.
inline std::pair<std::vector<std::string>, torch::Tensor> render_examples(const ShapesDataSpec& s) {
  const data::ShapesWorld world(s.image_size, s.seed);
  std::vector<std::string> captions;
  auto images = torch::empty({s.count, 3, s.image_size, s.image_size});
  for (std::int64_t i = 0; i < s.count; ++i) {
    auto e = world.example(static_cast<std::uint64_t>(s.first + i), data::Split::Train);
    captions.push_back(std::move(e.caption));
    images[i].copy_(pipeline::from_rgb(e.image));
  }
  return {std::move(captions), images};
}

template <class Conditioning, class Autoencoder>
std::string feature_cache_key(const ShapesDataSpec& s, const Conditioning& cond, const Autoencoder& ae) {
  return Fingerprint()
      .add("diffuse-features-v1")
      .add(cond.fingerprint())
      .add(ae.fingerprint())
      .add("shapes:" + std::to_string(s.image_size) + ":" + std::to_string(s.seed) + ":" + std::to_string(s.first) + ":" +
           std::to_string(s.count))
      .hex();
}

// Opens the cache for (spec, encoders) in `dir`, building it first when absent. `progress`
// receives (done, total) while building.
template <class Conditioning, class Autoencoder>
FeatureCache open_feature_cache(const std::filesystem::path& dir, const ShapesDataSpec& s, const Conditioning& cond,
                                const Autoencoder& ae, const std::function<void(std::int64_t, std::int64_t)>& progress = {}) {
  if (s.count < 1) throw InputError("feature cache: need at least one example");
  FeatureCache c;
  c.key = feature_cache_key(s, cond, ae);
  const auto path = dir / ("features-" + c.key + ".safetensors");
  c.path = path.string();
  if (!std::filesystem::is_regular_file(path)) {
    std::filesystem::create_directories(dir);
    std::vector<torch::Tensor> lat, ctx, pool;
    constexpr std::int64_t chunk = 512;
    for (std::int64_t i = 0; i < s.count; i += chunk) {
      ShapesDataSpec part = s;
      part.first = s.first + i;
      part.count = std::min(chunk, s.count - i);
      auto [captions, images] = render_examples(part);
      torch::NoGradGuard g;
      lat.push_back(ae.encode(images).contiguous());
      const auto f = cond.encode(captions);
      ctx.push_back(f.context);
      pool.push_back(f.pooled);
      if (progress) progress(i + part.count, s.count);
    }
    io::save_safetensors(path, {{"latents", torch::cat(lat)}, {"context", torch::cat(ctx)}, {"pooled", torch::cat(pool)}},
                         {{"diffuse.cache_key", c.key}});
  }
  io::SafetensorsFile f(c.path);
  const auto it = f.metadata().find("diffuse.cache_key");
  if (it == f.metadata().end() || it->second != c.key)
    throw InputError(c.path + ": feature cache key does not match its name (delete the file to rebuild it)");
  c.latents = io::load_tensor(f, "latents");  // zero-copy views of the mapping
  c.context = io::load_tensor(f, "context");
  c.pooled = io::load_tensor(f, "pooled");
  if (c.latents.size(0) != s.count || c.context.size(0) != s.count || c.pooled.size(0) != s.count)
    throw InputError(c.path + ": feature cache holds " + std::to_string(c.latents.size(0)) + " examples, expected " +
                     std::to_string(s.count));
  return c;
}

struct FolderFeatureCache {
  std::string key, path;
  BucketedFeatures features;  // zero-copy views of the cache file; `skipped` is empty when it was read back
};

// An image folder's features in its buckets (training/bucketed_features.hpp), from the cache in
// `dir`, built first when absent. The key covers the encoders, the buckets, and each item's file
// name, size, modification time and caption: editing, adding or removing an image or a caption
// builds a new cache.
template <class Conditioning, class Autoencoder>
FolderFeatureCache open_folder_feature_cache(const std::filesystem::path& dir, const data::ImageFolder& folder,
                                             const std::vector<data::Bucket>& buckets, const Conditioning& cond,
                                             const Autoencoder& ae, const std::function<void(const std::string&)>& log = {}) {
  namespace fs = std::filesystem;
  Fingerprint fp;
  fp.add("diffuse-folder-features-v1").add(cond.fingerprint()).add(ae.fingerprint());
  for (const auto& b : buckets) fp.add(std::to_string(b.width) + "x" + std::to_string(b.height));
  for (std::size_t i = 0; i < folder.size(); ++i) {
    std::error_code ec;
    const auto size = fs::file_size(folder.file(i), ec);
    const auto time = fs::last_write_time(folder.file(i), ec).time_since_epoch().count();
    fp.add(fs::relative(folder.file(i), folder.dir(), ec).generic_string()).add(std::to_string(size)).add(std::to_string(time));
    fp.add(folder.caption(i));
  }
  FolderFeatureCache c;
  c.key = fp.hex();
  const auto path = dir / ("features-" + c.key + ".safetensors");
  c.path = path.string();
  std::vector<data::SkippedFile> skipped;
  if (!fs::is_regular_file(path)) {
    fs::create_directories(dir);
    auto f = encode_in_buckets(
        folder, buckets, [&](const torch::Tensor& images) { return ae.encode(images); },
        [&](const std::vector<std::string>& captions) { return cond.encode(captions); }, log, "train");
    save_bucketed_features(path, f, {{"diffuse.cache_key", c.key}, {"diffuse.skipped", std::to_string(f.skipped.size())}});
    skipped = std::move(f.skipped);
  }
  io::SafetensorsFile f(c.path);
  const auto it = f.metadata().find("diffuse.cache_key");
  if (it == f.metadata().end() || it->second != c.key)
    throw InputError(c.path + ": feature cache key does not match its name (delete the file to rebuild it)");
  c.features = load_bucketed_features(f);
  c.features.skipped = std::move(skipped);
  return c;
}

}  // namespace diffuse::training
