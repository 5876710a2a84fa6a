#pragma once
// Atomic file replacement (POSIX; torch-free): data goes to a temporary file in the target's
// directory, is flushed to disk, then renamed over the target. A crash at any point leaves either
// the old file or the complete new one, never a half-written checkpoint.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <span>
#include <string>

#include "diffuse/core/error.hpp"

namespace diffuse::io {

// Writes through `write(chunk)` calls made by `produce`, then publishes atomically at `path`.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path) : path_(std::move(path)) {
    auto dir = path_.parent_path();
    if (dir.empty()) dir = ".";
    std::random_device rd;
    for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
      // Built by appending: g++ 12 at -O3 misreports `"." + string` here (-Wstringop-overflow).
      std::string name = ".";
      name += path_.filename().string();
      name += ".tmp-";
      name += std::to_string(::getpid());
      name += '-';
      name += std::to_string(rd());
      tmp_ = dir / name;
      fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd_ < 0 && errno != EEXIST) break;
    }
    if (fd_ < 0) throw Error(path_.string() + ": cannot create temporary file in " + dir.string() + ": " +
                             std::strerror(errno));
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() {
    if (fd_ >= 0) {  // not committed: discard
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }

  void write(const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ::ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw Error(path_.string() + ": write failed: " + std::strerror(errno));
      }
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }

  // Flushes, closes and renames over the target. Without commit() nothing is published.
  void commit() {
    if (::fsync(fd_) != 0) throw Error(path_.string() + ": fsync failed: " + std::strerror(errno));
    if (::close(fd_) != 0) {
      fd_ = -1;
      ::unlink(tmp_.c_str());
      throw Error(path_.string() + ": close failed: " + std::strerror(errno));
    }
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      const int e = errno;
      ::unlink(tmp_.c_str());
      throw Error(path_.string() + ": rename failed: " + std::strerror(e));
    }
    // Make the rename itself durable.
    auto dir = path_.parent_path();
    if (dir.empty()) dir = ".";
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
};

}  // namespace diffuse::io
