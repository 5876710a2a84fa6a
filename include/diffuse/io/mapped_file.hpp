#pragma once
// A read-only view of a whole file through mmap (POSIX; torch-free), and reads of its ranges
// through the descriptor, which it keeps open.
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
    fd_ = fd;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(data_, size_);
    ::close(fd_);
  }

  const std::string& path() const { return path_; }
  std::size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  std::byte* data() const { return data_; }

  // Copies [offset, offset + dest.size()) of the file into `dest` with pread: the bytes come from
  // the page cache without faulting this mapping's pages in, which costs several times more than
  // the copy on some VM kinds (docs/generate.md: a 6 GB file read 0.8 s this way, 3.0 s through
  // the mapping). A file cut shorter since it was opened is an error naming where it ended.
  void read(std::size_t offset, std::span<std::byte> dest) const {
    if (offset > size_ || dest.size() > size_ - offset)
      throw Error(path_ + ": read of " + std::to_string(dest.size()) + " bytes at " + std::to_string(offset) +
                  " lies past the end (" + std::to_string(size_) + " bytes)");
    std::size_t done = 0;
    while (done < dest.size()) {
      const ::ssize_t n = ::pread(fd_, dest.data() + done, dest.size() - done, static_cast<::off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw InputError(path_ + ": cannot read at byte " + std::to_string(offset + done) + ": " + std::strerror(errno));
      if (n == 0)
        throw InputError(path_ + ": ends at byte " + std::to_string(offset + done) + ", expected " +
                         std::to_string(size_) + " bytes (was it truncated while open?)");
      done += static_cast<std::size_t>(n);
    }
  }

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
  int fd_ = -1;
};

}  // namespace diffuse::io
