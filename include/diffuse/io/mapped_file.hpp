#pragma once
// A read-only view of a whole file through mmap (POSIX; torch-free).
//
// The mapping is MAP_PRIVATE with write permission: pages are shared with the page cache until
// written, and a write (e.g. an in-place op on a zero-copy tensor) copies the page instead of
// faulting or changing the file.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <string>

#include "diffuse/core/error.hpp"

namespace diffuse::io {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw InputError(path + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      throw InputError(path + ": cannot stat: " + std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      throw InputError(path + ": not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int e = errno;
        ::close(fd);
        throw InputError(path + ": cannot map: " + std::strerror(e));
      }
      data_ = static_cast<std::byte*>(p);
    }
    ::close(fd);  // the mapping stays valid without the descriptor
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(data_, size_);
  }

  const std::string& path() const { return path_; }
  std::size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  std::byte* data() const { return data_; }

  // Gives back the resident pages that lie wholly inside [offset, offset + length): a later read
  // faults them in again from the file, so this only lowers the process's resident memory after a
  // range was read for good (e.g. converted into another dtype). Pages shared with the bytes
  // around the range are kept; a page written through the private mapping would lose the write,
  // so never release a range a zero-copy view was written through.
  void release(std::size_t offset, std::size_t length) const {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t first = (offset + page - 1) / page * page, end = std::min(offset + length, size_) / page * page;
    if (data_ && end > first) ::madvise(data_ + first, end - first, MADV_DONTNEED);
  }

 private:
  std::string path_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace diffuse::io
