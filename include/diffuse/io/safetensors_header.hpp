#pragma once
// The safetensors header: parsing with full validation, and serialisation (torch-free, so the
// parser can be fuzzed with clang/libFuzzer and used from nvcc-compiled code).
//
// Format (huggingface/safetensors, "Format"): 8-byte little-endian u64 N, then N bytes of UTF-8
// JSON mapping tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} plus an optional
// "__metadata__" object of string -> string, then the byte buffer. Offsets are relative to the
// start of the buffer; the buffer must be covered exactly, without holes or overlaps.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/error.hpp"
#include "diffuse/io/dtype.hpp"

namespace diffuse::io {

// Headers beyond this are refused before any allocation: real checkpoints need well under 1 MB,
// and the reference implementation uses the same 100 MB bound against malicious files.
inline constexpr std::uint64_t max_header_bytes = 100'000'000;

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte offsets relative to the start of the data buffer
  std::uint64_t end = 0;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;  // validated not to overflow at parse time
    return n;
  }
  std::uint64_t nbytes() const { return end - begin; }
};

struct Header {
  std::vector<TensorInfo> tensors;             // in the order the header lists them
  std::map<std::string, std::string> metadata;  // "__metadata__"
  std::uint64_t data_start = 0;                // absolute file offset of the data buffer (8 + N)
  std::uint64_t data_size = 0;

  const TensorInfo* find(std::string_view name) const {
    for (const auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

namespace detail {

[[noreturn]] inline void header_error(std::string_view where, const std::string& what) {
  throw InputError(std::string(where) + ": " + what);
}

inline std::string tensor_where(std::string_view where, std::string_view name) {
  return std::string(where) + ": tensor '" + std::string(name) + "'";
}

inline std::uint64_t read_u64_le(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

inline std::uint64_t parse_u64(const nlohmann::ordered_json& j, std::string_view where,
                               std::string_view what) {
  if (!j.is_number_integer() || (j.is_number_integer() && !j.is_number_unsigned() && j.get<std::int64_t>() < 0))
    header_error(where, std::string(what) + " must be a non-negative integer, got " + j.dump());
  return j.get<std::uint64_t>();
}

inline TensorInfo parse_entry(const std::string& name, const nlohmann::ordered_json& e,
                              std::uint64_t data_size, std::string_view file) {
  const std::string where = tensor_where(file, name);
  if (!e.is_object()) header_error(where, "entry must be a JSON object, got " + std::string(e.type_name()));
  for (const auto& [k, v] : e.items()) {
    (void)v;
    if (k != "dtype" && k != "shape" && k != "data_offsets") header_error(where, "unknown field '" + k + "'");
  }
  TensorInfo t;
  t.name = name;

  auto dt = e.find("dtype");
  if (dt == e.end()) header_error(where, "missing field 'dtype'");
  if (!dt->is_string()) header_error(where, "'dtype' must be a string, got " + dt->dump());
  auto parsed = parse_dtype(dt->get_ref<const std::string&>());
  if (!parsed)
    header_error(where, "unknown dtype '" + dt->get<std::string>() +
                            "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  t.dtype = *parsed;

  auto sh = e.find("shape");
  if (sh == e.end()) header_error(where, "missing field 'shape'");
  if (!sh->is_array()) header_error(where, "'shape' must be an array, got " + sh->dump());
  std::uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_integer() || (!d.is_number_unsigned() && d.get<std::int64_t>() < 0))
      header_error(where, "shape " + sh->dump() + " has a dimension that is not a non-negative integer");
    const std::uint64_t dim = d.get<std::uint64_t>();
    if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
        __builtin_mul_overflow(numel, dim, &numel) ||
        numel > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      header_error(where, "shape " + sh->dump() + " overflows the element count");
    t.shape.push_back(static_cast<std::int64_t>(dim));
  }

  auto off = e.find("data_offsets");
  if (off == e.end()) header_error(where, "missing field 'data_offsets'");
  if (!off->is_array() || off->size() != 2)
    header_error(where, "'data_offsets' must be [begin, end], got " + off->dump());
  t.begin = parse_u64((*off)[0], where, "data_offsets[0]");
  t.end = parse_u64((*off)[1], where, "data_offsets[1]");
  if (t.begin > t.end)
    header_error(where, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                            "] has begin after end");
  if (t.end > data_size)
    header_error(where, "data_offsets end " + std::to_string(t.end) + " is beyond the data buffer of " +
                            std::to_string(data_size) + " bytes (file truncated?)");
  std::uint64_t expect = 0;
  if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(dtype_size(t.dtype)), &expect))
    header_error(where, "byte size of shape " + sh->dump() + " overflows");
  if (expect != t.end - t.begin)
    header_error(where, "dtype " + std::string(dtype_name(t.dtype)) + " and shape " + sh->dump() + " need " +
                            std::to_string(expect) + " bytes but data_offsets cover " +
                            std::to_string(t.end - t.begin));
  return t;
}

}  // namespace detail

// Parses and validates the JSON header text. `data_size` is the number of bytes after the header;
// `file` names the source in error messages. Throws InputError naming the file and the tensor.
inline Header parse_header_json(std::string_view json_text, std::uint64_t data_size, std::string_view file) {
  using json = nlohmann::ordered_json;
  // Duplicate keys are silently merged by JSON parsers; a checkpoint with two tensors of one
  // name is ambiguous, so refuse it. Track the keys of every open object.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
    switch (ev) {
      case json::parse_event_t::object_start: open_objects.emplace_back(); break;
      case json::parse_event_t::object_end: if (!open_objects.empty()) open_objects.pop_back(); break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default: break;
    }
    return true;
  };
  json root;
  try {
    root = json::parse(json_text.begin(), json_text.end(), cb);
  } catch (const json::exception& e) {
    detail::header_error(file, std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) detail::header_error(file, "duplicate key '" + duplicate + "' in header");
  if (!root.is_object()) detail::header_error(file, "header must be a JSON object");

  Header h;
  h.data_size = data_size;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) detail::header_error(file, "'__metadata__' must be an object of strings");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string())
          detail::header_error(file, "'__metadata__' value of '" + k + "' must be a string, got " + v.dump());
        h.metadata.emplace(k, v.get<std::string>());
      }
      continue;
    }
    h.tensors.push_back(detail::parse_entry(name, entry, data_size, file));
  }

  // The buffer must be covered exactly: sorted by offset, each range starts where the last ended.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : h.tensors) by_offset.push_back(&t);
  std::stable_sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t cursor = 0;
  const TensorInfo* prev = nullptr;
  for (const auto* t : by_offset) {
    if (t->begin < cursor)
      detail::header_error(detail::tensor_where(file, t->name),
                           "byte range [" + std::to_string(t->begin) + ", " + std::to_string(t->end) +
                               ") overlaps tensor '" + prev->name + "'");
    if (t->begin > cursor)
      detail::header_error(detail::tensor_where(file, t->name),
                           "byte range starts at " + std::to_string(t->begin) + " but the previous tensor ends at " +
                               std::to_string(cursor) + " (non-contiguous data)");
    cursor = t->end;
    prev = t;
  }
  if (cursor != data_size)
    detail::header_error(file, "tensors cover " + std::to_string(cursor) + " bytes but the data buffer has " +
                                   std::to_string(data_size) + " (trailing bytes or truncated header)");
  return h;
}

// Parses the header of a whole safetensors file held in memory (or memory-mapped).
inline Header parse_header(std::span<const std::byte> file_bytes, std::string_view file) {
  if (file_bytes.size() < 8)
    detail::header_error(file, "file is " + std::to_string(file_bytes.size()) +
                                   " bytes, too short for the 8-byte header length (truncated?)");
  const std::uint64_t n = detail::read_u64_le(reinterpret_cast<const unsigned char*>(file_bytes.data()));
  if (n > max_header_bytes)
    detail::header_error(file, "header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > file_bytes.size() - 8)
    detail::header_error(file, "header length " + std::to_string(n) + " is larger than the " +
                                   std::to_string(file_bytes.size() - 8) + " bytes after it (truncated?)");
  std::string_view text(reinterpret_cast<const char*>(file_bytes.data()) + 8, n);
  Header h = parse_header_json(text, file_bytes.size() - 8 - n, file);
  h.data_start = 8 + n;
  return h;
}

// Serialises a header for tensors laid out back to back in the given order (offsets are
// recomputed). The JSON is padded with spaces so the data buffer starts 8-byte aligned.
inline std::string make_header(std::vector<TensorInfo>& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  if (!metadata.empty()) root["__metadata__"] = metadata;
  std::uint64_t cursor = 0;
  std::set<std::string_view> names;
  for (auto& t : tensors) {
    if (t.name == "__metadata__") throw InputError("safetensors: '__metadata__' cannot name a tensor");
    if (!names.insert(t.name).second) throw InputError("safetensors: tensor '" + t.name + "' given twice");
    const std::uint64_t bytes = static_cast<std::uint64_t>(t.numel()) * dtype_size(t.dtype);
    t.begin = cursor;
    t.end = cursor + bytes;
    cursor = t.end;
    root[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.begin, t.end}}};
  }
  std::string text = root.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  std::string out(8, '\0');
  std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text;
}

}  // namespace diffuse::io
