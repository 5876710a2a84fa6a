// libFuzzer entry: any byte string is either a valid safetensors file or an InputError;
// anything else (a crash, a sanitizer report, another exception type) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "diffuse/io/safetensors_header.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto h = diffuse::io::parse_header({reinterpret_cast<const std::byte*>(data), size}, "fuzz");
    // Invariants of an accepted header: every range lies inside the file and matches its shape.
    for (const auto& t : h.tensors) {
      if (h.data_start + t.end > size) __builtin_trap();
      if (static_cast<std::uint64_t>(t.numel()) * diffuse::io::dtype_size(t.dtype) != t.nbytes()) __builtin_trap();
    }
  } catch (const diffuse::InputError&) {
  }
  return 0;
}
