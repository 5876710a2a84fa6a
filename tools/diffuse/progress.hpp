#pragma once
// A one-line progress report for long loops: step, rate and ETA on stderr (no Debian package
// provides a C++ progress bar; BUILD_NOTES section 8).
#include <chrono>
#include <cstdio>
#include <string>

namespace diffuse::cli {

class Progress {
 public:
  Progress(std::string what, int total) : what_(std::move(what)), total_(total), start_(clock::now()) {}
  // Times from now on: for loops whose set-up (e.g. loading a model) should not count in the rate.
  void restart() { start_ = clock::now(); }
  void update(int done, const std::string& extra = {}) {
    const double s = std::chrono::duration<double>(clock::now() - start_).count();
    const double eta = done > 0 ? s / done * (total_ - done) : 0.0;
    std::fprintf(stderr, "\r%s %d/%d  %.2f s/it  elapsed %.1f s  ETA %.1f s  %s   ", what_.c_str(), done, total_,
                 done > 0 ? s / done : 0.0, s, eta, extra.c_str());
    if (done == total_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  using clock = std::chrono::steady_clock;
  std::string what_;
  int total_;
  clock::time_point start_;
};

}  // namespace diffuse::cli
