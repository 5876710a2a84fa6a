#pragma once
// safetensors <-> torch::Tensor. Loading is lazy per tensor and zero-copy when the stored dtype is
// the requested one: the tensor is a view of the memory-mapped file that keeps the mapping alive.
// Any other dtype or device gives a converted copy, after which the source pages are given back to
// the page cache; `LoadOptions::in_memory` asks for a copy (read, not mapped) in every case.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>  // before ordered_dict.h, which uses TORCH_CHECK without including it
#include <torch/ordered_dict.h>

#include "diffuse/core/error.hpp"
#include "diffuse/core/huge_pages.hpp"
#include "diffuse/io/safetensors_file.hpp"

namespace diffuse::io {

inline torch::ScalarType to_scalar_type(Dtype d) {
  switch (d) {
    case Dtype::F64: return torch::kFloat64;
    case Dtype::F32: return torch::kFloat32;
    case Dtype::F16: return torch::kFloat16;
    case Dtype::BF16: return torch::kBFloat16;
    case Dtype::I64: return torch::kInt64;
    case Dtype::I32: return torch::kInt32;
    case Dtype::I16: return torch::kInt16;
    case Dtype::I8: return torch::kInt8;
    case Dtype::U8: return torch::kUInt8;
    case Dtype::BOOL: return torch::kBool;
  }
  throw Error("safetensors: unhandled dtype");
}

inline Dtype from_scalar_type(torch::ScalarType s) {
  for (Dtype d : all_dtypes)
    if (to_scalar_type(d) == s) return d;
  throw InputError(std::string("safetensors: torch dtype ") + c10::toString(s) + " has no safetensors equivalent");
}

// `dtype` empty keeps the stored dtype.
struct LoadOptions {
  std::optional<torch::ScalarType> dtype;
  torch::Device device = torch::kCPU;
  // A tensor already in the wanted dtype is read into memory of its own (pread, huge pages) rather
  // than viewed in the mapping. For a model about to use every weight this is the cheaper way in:
  // a view is paid for at its first use, a fault per 4 KiB page (the first denoising step from a
  // bf16 file took 4x the later ones), and the process holds the file's pages as well.
  bool in_memory = false;
};

// One tensor of an open file. Zero-copy when no conversion is needed and the bytes are aligned.
inline torch::Tensor load_tensor(const SafetensorsFile& file, const TensorInfo& info, const LoadOptions& opt = {}) {
  const auto stored = to_scalar_type(info.dtype);
  const auto want = opt.dtype.value_or(stored);
  const bool convert = want != stored || !opt.device.is_cpu();
  if (opt.in_memory && !convert) {
    auto own = huge_page_empty(info.shape, stored);
    if (info.nbytes() > 0) file.read(info, static_cast<std::byte*>(own.data_ptr()));
    return own;
  }
  std::byte* ptr = file.mutable_data(info);
  torch::Tensor t;
  const bool aligned = reinterpret_cast<std::uintptr_t>(ptr) % dtype_size(info.dtype) == 0;
  auto keep_alive = file.mapping();
  auto view = torch::from_blob(
      ptr, info.shape, [keep_alive](void*) mutable { keep_alive.reset(); }, torch::TensorOptions().dtype(stored));
  t = aligned ? view : view.clone();
  if (convert) t = opt.device.is_cpu() ? huge_page_empty(info.shape, want).copy_(t) : t.to(opt.device, want);
  // A copy no longer needs the source pages: give them back (a converted SD3 MM-DiT would
  // otherwise hold the file's 4 GB and its own 4 GB at once).
  if (!aligned || convert) file.release(info);
  return t;
}

inline torch::Tensor load_tensor(const SafetensorsFile& file, std::string_view name, const LoadOptions& opt = {}) {
  return load_tensor(file, file.info(name), opt);
}

// Every tensor of a file, in the file's order.
inline torch::OrderedDict<std::string, torch::Tensor> load_safetensors(const std::string& path,
                                                                       const LoadOptions& opt = {}) {
  SafetensorsFile file(path);
  torch::OrderedDict<std::string, torch::Tensor> out;
  out.reserve(file.tensors().size());
  for (const auto& info : file.tensors()) out.insert(info.name, load_tensor(file, info, opt));
  return out;
}

// Writes tensors (any device, any layout) atomically; they are stored contiguous, on the CPU.
// A loaded dict is saved back with `save_safetensors(path, dict.pairs())`.
inline void save_safetensors(const std::filesystem::path& path,
                             const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  std::vector<torch::Tensor> host;
  std::vector<RawTensor> raw;
  host.reserve(tensors.size());
  raw.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) throw InputError(path.string() + ": tensor '" + name + "' is undefined");
    host.push_back(t.detach().to(torch::kCPU).contiguous());
    const auto& h = host.back();
    raw.push_back({name, from_scalar_type(h.scalar_type()), h.sizes().vec(),
                   {static_cast<const std::byte*>(h.data_ptr()), static_cast<std::size_t>(h.nbytes())}});
  }
  write_safetensors(path, raw, metadata);
}

}  // namespace diffuse::io
