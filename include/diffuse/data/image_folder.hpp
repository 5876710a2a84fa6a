#pragma once
// A folder of the user's captioned images, the way fine-tuning tools take them (torch-free):
//   DIR/**/*.png|jpg|jpeg|webp|bmp, each captioned by
//   - an entry of a metadata.jsonl in its folder or one above, {"file_name": "a/b.png", "text": ...}
//     with the name relative to that file's folder (Hugging Face's imagefolder), or else
//   - a same-named .txt beside it (kohya sd-scripts' caption files).
// A file without a caption, a metadata line that is not such an object, an entry naming a missing
// image and (when read) an unreadable image are reported by name and skipped, never fatal.
//
// It is one of the captioned-image datasets (data/dataset.hpp) the fine-tuner reads.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/error.hpp"
#include "diffuse/data/dataset.hpp"
#include "diffuse/io/image_file.hpp"

namespace diffuse::data {

class ImageFolder {
 public:
  explicit ImageFolder(std::filesystem::path dir) : dir_(std::move(dir)) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(dir_, ec)) throw InputError(dir_.string() + ": not a folder of images");
    std::vector<fs::path> images, metadata;
    for (auto it = fs::recursive_directory_iterator(dir_, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file(ec)) continue;
      if (it->path().filename() == "metadata.jsonl") metadata.push_back(it->path());
      else if (io::is_image_file(it->path())) images.push_back(it->path().lexically_normal());
    }
    if (ec) throw InputError(dir_.string() + ": cannot list: " + ec.message());
    std::sort(images.begin(), images.end());
    std::map<fs::path, std::string> captions;  // from metadata.jsonl; deeper files win (read last)
    std::sort(metadata.begin(), metadata.end(), [](const fs::path& a, const fs::path& b) {
      const auto da = std::distance(a.begin(), a.end()), db = std::distance(b.begin(), b.end());
      return da != db ? da < db : a < b;
    });
    for (const auto& m : metadata) read_metadata(m, captions);
    for (const auto& img : images) {
      if (const auto it = captions.find(img); it != captions.end()) {
        items_.push_back({img, it->second});
        continue;
      }
      auto txt = img;
      txt.replace_extension(".txt");
      std::ifstream in(txt);
      if (in) {
        std::stringstream ss;
        ss << in.rdbuf();
        auto c = trim(ss.str());
        if (!c.empty()) {
          items_.push_back({img, std::move(c)});
          continue;
        }
        skipped_.push_back({img.string(), "empty caption file " + txt.filename().string()});
        continue;
      }
      skipped_.push_back({img.string(), "no caption (no " + txt.filename().string() + " beside it and no metadata.jsonl entry)"});
    }
  }

  const std::filesystem::path& dir() const { return dir_; }
  std::size_t size() const { return items_.size(); }
  const std::string& caption(std::size_t i) const { return items_.at(i).caption; }
  const std::filesystem::path& file(std::size_t i) const { return items_.at(i).file; }
  // Reads image i; an unreadable file is an InputError naming it.
  io::RGBImage image(std::size_t i) const { return io::read_image(items_.at(i).file); }
  // What the scan skipped, in order found.
  const std::vector<SkippedFile>& skipped() const { return skipped_; }

 private:
  struct Item {
    std::filesystem::path file;
    std::string caption;
  };
  static std::string trim(const std::string& s) {
    const auto a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  }
  void read_metadata(const std::filesystem::path& m, std::map<std::filesystem::path, std::string>& captions) {
    std::ifstream in(m);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (trim(line).empty()) continue;
      const auto where = m.string() + ":" + std::to_string(n);
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) {
        skipped_.push_back({where, "not a JSON object"});
        continue;
      }
      if (!j.contains("file_name") || !j["file_name"].is_string() || !j.contains("text") || !j["text"].is_string()) {
        skipped_.push_back({where, "needs string fields \"file_name\" and \"text\""});
        continue;
      }
      const auto file = (m.parent_path() / j["file_name"].get<std::string>()).lexically_normal();
      if (!std::filesystem::is_regular_file(file)) {
        skipped_.push_back({where, j["file_name"].get<std::string>() + ": no such image"});
        continue;
      }
      const auto text = trim(j["text"].get<std::string>());
      if (text.empty()) continue;  // the image is reported as uncaptioned unless a .txt captions it
      captions[file] = text;
    }
  }

  std::filesystem::path dir_;
  std::vector<Item> items_;
  std::vector<SkippedFile> skipped_;
};

}  // namespace diffuse::data
