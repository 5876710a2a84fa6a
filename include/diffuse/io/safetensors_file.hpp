#pragma once
// Reading and writing safetensors files without LibTorch: a memory-mapped file whose tensors are
// looked up lazily by name, and an atomic writer of raw byte ranges. `io/safetensors.hpp` builds
// the torch::Tensor interface on top of this.
#include <bit>
#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/core/error.hpp"
#include "diffuse/io/atomic_file.hpp"
#include "diffuse/io/mapped_file.hpp"
#include "diffuse/io/safetensors_header.hpp"

namespace diffuse::io {

static_assert(std::endian::native == std::endian::little,
              "diffuse reads safetensors (little-endian) without byte swapping: big-endian hosts are not supported");

class SafetensorsFile {
 public:
  // Maps the file and validates its header; tensor bytes are not touched until asked for.
  explicit SafetensorsFile(const std::string& path)
      : map_(std::make_shared<MappedFile>(path)), header_(parse_header(map_->bytes(), path)) {}

  const std::string& path() const { return map_->path(); }
  const Header& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  bool contains(std::string_view name) const { return header_.find(name) != nullptr; }

  const TensorInfo& info(std::string_view name) const {
    if (const auto* t = header_.find(name)) return *t;
    throw InputError(path() + ": no tensor named '" + std::string(name) + "' (the file has " +
                     std::to_string(header_.tensors.size()) + " tensors)");
  }

  std::span<const std::byte> bytes(const TensorInfo& t) const {
    return map_->bytes().subspan(header_.data_start + t.begin, t.nbytes());
  }
  // Mutable pointer into the private (copy-on-write) mapping, for zero-copy tensor views.
  std::byte* mutable_data(const TensorInfo& t) const { return map_->data() + header_.data_start + t.begin; }
  // Copies a tensor's bytes into `dest` (t.nbytes() of them) without touching the mapping (MappedFile::read).
  void read(const TensorInfo& t, std::byte* dest) const { map_->read(header_.data_start + t.begin, {dest, t.nbytes()}); }
  // Lowers resident memory once a tensor's bytes were copied out for good (MappedFile::release).
  void release(const TensorInfo& t) const { map_->release(header_.data_start + t.begin, t.nbytes()); }
  // Shares ownership of the mapping, so views can outlive this object.
  std::shared_ptr<MappedFile> mapping() const { return map_; }

 private:
  std::shared_ptr<MappedFile> map_;
  Header header_;
};

// One tensor to write: its bytes must hold numel(shape) * dtype_size(dtype) bytes, little-endian.
struct RawTensor {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> bytes;
};

// Writes a safetensors file atomically (temporary file + rename); tensors are stored in the order given.
inline void write_safetensors(const std::filesystem::path& path, const std::vector<RawTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  std::vector<TensorInfo> infos;
  infos.reserve(tensors.size());
  for (const auto& t : tensors) {
    TensorInfo i;
    i.name = t.name;
    i.dtype = t.dtype;
    i.shape = t.shape;
    for (auto d : t.shape)
      if (d < 0) throw InputError(path.string() + ": tensor '" + t.name + "' has a negative dimension");
    if (static_cast<std::uint64_t>(i.numel()) * dtype_size(t.dtype) != t.bytes.size())
      throw InputError(path.string() + ": tensor '" + t.name + "' has " + std::to_string(t.bytes.size()) +
                       " bytes, its dtype and shape need " +
                       std::to_string(static_cast<std::uint64_t>(i.numel()) * dtype_size(t.dtype)));
    infos.push_back(std::move(i));
  }
  const std::string header = make_header(infos, metadata);
  AtomicFileWriter out(path);
  out.write(header.data(), header.size());
  for (const auto& t : tensors) out.write(t.bytes.data(), t.bytes.size());
  out.commit();
}

}  // namespace diffuse::io
