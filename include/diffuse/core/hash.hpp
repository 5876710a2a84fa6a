#pragma once
// torch-free. Content fingerprints for caches and model identity: 64-bit FNV-1a (Fowler, Noll,
// Vo; the offset basis and prime are the published 64-bit constants). Not cryptographic: it tells
// stale files apart, it does not defend against forgery.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "diffuse/core/error.hpp"

namespace diffuse {

class Fingerprint {
 public:
  Fingerprint& add(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001b3ull;
    return *this;
  }
  Fingerprint& add(std::string_view s) {
    const std::uint64_t n = s.size();  // length first: ("ab", "c") and ("a", "bc") differ
    add(&n, sizeof n);
    return add(s.data(), s.size());
  }
  Fingerprint& add_file(const std::filesystem::path& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw InputError(path.string() + ": cannot read the file to fingerprint it");
    char buf[1 << 16];
    while (f.read(buf, sizeof buf) || f.gcount() > 0) add(buf, static_cast<std::size_t>(f.gcount()));
    return *this;
  }
  std::uint64_t value() const { return h_; }
  std::string hex() const {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(h_));
    return b;
  }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace diffuse
