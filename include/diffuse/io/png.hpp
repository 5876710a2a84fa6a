#pragma once
// PNG files for RGB images held as xtensor arrays (torch-free), through stb_image/stb_image_write
// (Debian's libstb). Writes are atomic (io/atomic_file.hpp) and can carry tEXt chunks (PNG spec
// section 11.3.4.3): key/value text such as the generation parameters, which `read_png_text`
// reads back.
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <xtensor/xtensor.hpp>

#include "diffuse/core/error.hpp"
#include "diffuse/io/atomic_file.hpp"
#include "diffuse/io/mapped_file.hpp"

namespace diffuse::io {

using RGBImage = xt::xtensor<std::uint8_t, 3>;  // (height, width, 3)

namespace png_detail {

inline std::uint32_t crc32(const unsigned char* p, std::size_t n, std::uint32_t crc = 0xffffffffu) {
  for (std::size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return crc;
}

inline void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline std::uint32_t get_u32(const unsigned char* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}

inline std::string text_chunk(const std::string& key, const std::string& value) {
  if (key.empty() || key.size() > 79 || key.find('\0') != std::string::npos)
    throw InputError("png: text key '" + key + "' must be 1-79 characters without NUL");
  std::string body = "tEXt" + key + std::string(1, '\0') + value;
  std::string out;
  put_u32(out, static_cast<std::uint32_t>(body.size() - 4));
  out += body;
  put_u32(out, crc32(reinterpret_cast<const unsigned char*>(body.data()), body.size()) ^ 0xffffffffu);
  return out;
}

}  // namespace png_detail

// Encodes an RGB image as PNG bytes, with tEXt chunks inserted after IHDR.
inline std::string encode_png(const RGBImage& image, const std::map<std::string, std::string>& text = {}) {
  const int h = static_cast<int>(image.shape()[0]), w = static_cast<int>(image.shape()[1]);
  if (image.shape()[2] != 3 || h <= 0 || w <= 0) throw InputError("png: image must be (height, width, 3), non-empty");
  std::string bytes;
  auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); };
  if (!stbi_write_png_to_func(sink, &bytes, w, h, 3, image.data(), w * 3)) throw Error("png: encoding failed");
  const std::size_t ihdr_end = 8 + 8 + 13 + 4;  // signature, IHDR length+type, IHDR data, CRC
  std::string chunks;
  for (const auto& [k, v] : text) chunks += png_detail::text_chunk(k, v);
  bytes.insert(ihdr_end, chunks);
  return bytes;
}

inline void write_png(const std::filesystem::path& path, const RGBImage& image,
                      const std::map<std::string, std::string>& text = {}) {
  const std::string bytes = encode_png(image, text);
  AtomicFileWriter out(path);
  out.write(bytes.data(), bytes.size());
  out.commit();
}

inline RGBImage read_png(const std::filesystem::path& path) {
  int w = 0, h = 0, c = 0;
  unsigned char* data = stbi_load(path.c_str(), &w, &h, &c, 3);
  if (!data) throw InputError(path.string() + ": cannot read image: " + stbi_failure_reason());
  RGBImage img = xt::zeros<std::uint8_t>({static_cast<std::size_t>(h), static_cast<std::size_t>(w), std::size_t{3}});
  std::memcpy(img.data(), data, static_cast<std::size_t>(w) * h * 3);
  stbi_image_free(data);
  return img;
}

// The tEXt chunks of a PNG file, in file order; chunks with a bad CRC are an error.
inline std::vector<std::pair<std::string, std::string>> read_png_text(const std::filesystem::path& path) {
  MappedFile f(path.string());
  const auto* p = reinterpret_cast<const unsigned char*>(f.bytes().data());
  const std::size_t n = f.size();
  static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
  if (n < 8 || std::memcmp(p, sig, 8) != 0) throw InputError(path.string() + ": not a PNG file");
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t pos = 8;
  while (pos + 12 <= n) {
    const std::uint32_t len = png_detail::get_u32(p + pos);
    if (len > n - pos - 12) throw InputError(path.string() + ": truncated chunk at byte " + std::to_string(pos));
    const std::string type(reinterpret_cast<const char*>(p + pos + 4), 4);
    if (type == "tEXt") {
      const std::uint32_t crc = png_detail::crc32(p + pos + 4, len + 4) ^ 0xffffffffu;
      if (crc != png_detail::get_u32(p + pos + 8 + len))
        throw InputError(path.string() + ": tEXt chunk at byte " + std::to_string(pos) + " has a bad CRC");
      const std::string body(reinterpret_cast<const char*>(p + pos + 8), len);
      const auto nul = body.find('\0');
      if (nul == std::string::npos) throw InputError(path.string() + ": tEXt chunk without a key separator");
      out.emplace_back(body.substr(0, nul), body.substr(nul + 1));
    }
    if (type == "IEND") break;
    pos += 12 + len;
  }
  return out;
}

}  // namespace diffuse::io
