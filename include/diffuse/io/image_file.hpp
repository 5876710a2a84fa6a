#pragma once
// Reading RGB images of the formats users keep their training images in, torch-free: PNG, JPEG,
// BMP, TGA and the others stb_image reads (Debian's libstb), WebP through Debian's libwebp; and
// resizing them (stb_image_resize, Mitchell filter when shrinking) for aspect-ratio buckets.
#include <cctype>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <webp/decode.h>
#include <xtensor/xtensor.hpp>

#include "diffuse/core/error.hpp"
#include "diffuse/io/png.hpp"

namespace diffuse::io {

// Whether `path` has an extension read_image accepts (case-insensitive).
inline bool is_image_file(const std::filesystem::path& path) {
  std::string e = path.extension().string();
  for (auto& ch : e) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return e == ".png" || e == ".jpg" || e == ".jpeg" || e == ".webp" || e == ".bmp";
}

// The image at `path` as (height, width, 3) bytes; an unreadable or truncated file is an
// InputError naming it and the decoder's reason.
inline RGBImage read_image(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty()) throw InputError(path.string() + ": empty file");
  const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
  int w = 0, h = 0;
  std::uint8_t* data = nullptr;
  // WebP: "RIFF" size "WEBP" (RFC 9649, section 2.5)
  const bool webp = bytes.size() >= 12 && bytes.compare(0, 4, "RIFF") == 0 && bytes.compare(8, 4, "WEBP") == 0;
  if (webp) {
    data = WebPDecodeRGB(p, bytes.size(), &w, &h);
    if (!data) throw InputError(path.string() + ": cannot read image: not a decodable WebP file");
  } else {
    int c = 0;
    data = stbi_load_from_memory(p, static_cast<int>(bytes.size()), &w, &h, &c, 3);
    if (!data) throw InputError(path.string() + ": cannot read image: " + stbi_failure_reason());
  }
  RGBImage img = xt::zeros<std::uint8_t>({static_cast<std::size_t>(h), static_cast<std::size_t>(w), std::size_t{3}});
  std::memcpy(img.data(), data, static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
  if (webp) WebPFree(data);
  else stbi_image_free(data);
  return img;
}

// `image` resampled to width x height (sRGB-agnostic: values filtered as stored).
inline RGBImage resize_image(const RGBImage& image, int width, int height) {
  if (width < 1 || height < 1) throw InputError("resize_image: target size must be positive");
  const int h = static_cast<int>(image.shape(0)), w = static_cast<int>(image.shape(1));
  if (w == width && h == height) return image;
  RGBImage out = xt::zeros<std::uint8_t>({static_cast<std::size_t>(height), static_cast<std::size_t>(width), std::size_t{3}});
  if (!stbir_resize_uint8(image.data(), w, h, 0, out.data(), width, height, 0, 3))
    throw Error("resize_image: stb_image_resize failed");
  return out;
}

// The part of `image` with rows [top, top + height) and columns [left, left + width).
inline RGBImage crop_image(const RGBImage& image, int left, int top, int width, int height) {
  if (left < 0 || top < 0 || width < 1 || height < 1 || left + width > static_cast<int>(image.shape(1)) ||
      top + height > static_cast<int>(image.shape(0)))
    throw InputError("crop_image: the crop does not lie inside the image");
  RGBImage out = xt::zeros<std::uint8_t>({static_cast<std::size_t>(height), static_cast<std::size_t>(width), std::size_t{3}});
  const auto row = static_cast<std::size_t>(width) * 3, stride = image.shape(1) * 3;
  for (int y = 0; y < height; ++y)
    std::memcpy(out.data() + static_cast<std::size_t>(y) * row,
                image.data() + static_cast<std::size_t>(top + y) * stride + static_cast<std::size_t>(left) * 3, row);
  return out;
}

}  // namespace diffuse::io
