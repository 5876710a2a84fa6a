#pragma once
// Host memory for large tensors that are written once and read often (model weights). On Linux a
// tensor of 2 MiB or more gets 2 MiB-aligned memory advised to be backed by transparent huge pages:
// fresh memory is paid for a page fault at a time, and on some VM kinds each fault of a 4 KiB page
// costs microseconds (docs/generate.md measures a 4 GiB fill at 13-16 s with 4 KiB pages against
// 0.2-9 s with huge pages), and kernels reading rows N elements apart touch fewer pages.
#include <cstddef>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <torch/types.h>

namespace diffuse {

// An uninitialised CPU tensor of `sizes` and `dtype`, huge-page backed where the kernel allows it
// (THP mode "madvise" or "always"); smaller tensors and other systems get torch::empty.
inline torch::Tensor huge_page_empty(torch::IntArrayRef sizes, torch::ScalarType dtype) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::size_t huge = std::size_t{2} << 20;
  std::size_t bytes = c10::elementSize(dtype);
  for (const auto s : sizes) bytes *= static_cast<std::size_t>(s);
  void* p = nullptr;
  if (bytes >= huge && posix_memalign(&p, huge, bytes) == 0) {
    madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP the pages are ordinary ones
    return torch::from_blob(p, sizes, [](void* q) { std::free(q); }, torch::TensorOptions().dtype(dtype));
  }
#endif
  return torch::empty(sizes, torch::TensorOptions().dtype(dtype));
}

}  // namespace diffuse
