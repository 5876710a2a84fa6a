#pragma once
// OpenBLAS's thread count, held at 1 for a scope (torch-free). Debian's LibTorch multiplies through
// OpenBLAS, whose thread pool is process-wide and sized by the CPUs, not by LibTorch's intra-op
// setting: threads that each run their own products on their own core (training/shard_pool.hpp)
// would otherwise each hand every product to the same pool. Looked up at run time, so a LibTorch
// on MKL (pip wheels), where at::set_num_threads already governs the products per thread, or a
// reference BLAS, makes this a no-op.
#include <dlfcn.h>

namespace diffuse {

class SingleThreadedBlas {
 public:
  SingleThreadedBlas() {
    get_ = reinterpret_cast<Get>(::dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    set_ = reinterpret_cast<Set>(::dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (!get_ || !set_) return;
    previous_ = get_();
    if (previous_ != 1) set_(1);
  }
  ~SingleThreadedBlas() {
    if (set_ && previous_ > 1) set_(previous_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  using Get = int (*)();
  using Set = void (*)(int);
  Get get_ = nullptr;
  Set set_ = nullptr;
  int previous_ = 0;
};

}  // namespace diffuse
