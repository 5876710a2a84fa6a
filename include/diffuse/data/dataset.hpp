#pragma once
// The dataset concept the fine-tuner reads: captioned RGB images by index. Two models of it: the
// user's image folder (data/image_folder.hpp) and the shapes world (ShapesImages below, e.g. one
// category's examples). image(i) may throw InputError for an unreadable item; the reader reports
// and skips it.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "diffuse/data/shapes_dataset.hpp"

namespace diffuse::data {

// An item a dataset could not use, and why (an image, or "FILE:LINE" of a captions file).
struct SkippedFile {
  std::string file;
  std::string reason;
};

template <class D>
concept CaptionedImages = requires(const D& d, std::size_t i) {
  { d.size() } -> std::convertible_to<std::size_t>;
  { d.caption(i) } -> std::convertible_to<std::string>;
  { d.image(i) } -> std::same_as<io::RGBImage>;
};

// `count` examples of the shapes world (size, seed, split), all of one category when given:
// the dataset's example indices of that category (index % 6), in order.
class ShapesImages {
 public:
  ShapesImages(int size, std::uint64_t seed, std::size_t count, std::optional<Category> only = {}, Split split = Split::Train)
      : world_(size, seed), count_(count), only_(only), split_(split) {}
  std::size_t size() const { return count_; }
  std::string caption(std::size_t i) const { return world_.example(index(i), split_).caption; }
  io::RGBImage image(std::size_t i) const { return world_.example(index(i), split_).image; }
  std::uint64_t index(std::size_t i) const {
    if (!only_) return i;
    std::size_t k = 0;
    while (all_categories[k] != *only_) ++k;
    return static_cast<std::uint64_t>(i * all_categories.size() + k);
  }

 private:
  ShapesWorld world_;
  std::size_t count_;
  std::optional<Category> only_;
  Split split_;
};

}  // namespace diffuse::data
