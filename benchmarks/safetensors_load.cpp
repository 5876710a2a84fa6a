// Benchmark: loading a checkpoint through the memory map (zero-copy views) against reading the
// whole file into memory and copying each tensor out (what a naive loader does). Both run in
// this process, on the same file, so the ratio is meaningful on a noisy machine.
//   ./bench_safetensors_load [MB=256] [REPEATS=5]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include <diffuse/core/runtime_tuning.hpp>
#include <diffuse/diffuse.hpp>

int main(int argc, char** argv) {
  diffuse::tune_runtime(argv);  // DIFFUSE_NO_TUNE=1 measures the untuned baseline
  diffuse::configure_threads();
  const int mb = argc > 1 ? std::atoi(argv[1]) : 256;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  const auto path = std::filesystem::temp_directory_path() / "diffuse_bench_load.safetensors";
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  const std::int64_t per = 1536 * 1536;  // an SD3-medium attention projection
  for (std::int64_t i = 0; i * per * 4 < std::int64_t(mb) << 20; ++i)
    tensors.emplace_back("t" + std::to_string(i), torch::randn({1536, 1536}));
  diffuse::io::save_safetensors(path, tensors);

  using clock = std::chrono::steady_clock;
  auto time = [&](auto&& f) {
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(clock::now() - t0).count());
    }
    return best;
  };
  double sum_mmap = 0, sum_read = 0;
  const double t_mmap = time([&] {
    auto d = diffuse::io::load_safetensors(path.string());
    for (const auto& it : d) sum_mmap += it.value()[0][0].item<float>();  // touch one page each
  });
  const double t_read = time([&] {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes(std::filesystem::file_size(path));
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    diffuse::io::SafetensorsFile f(path.string());
    for (const auto& info : f.tensors()) {
      auto t = torch::empty(info.shape);
      std::memcpy(t.data_ptr(), bytes.data() + f.header().data_start + info.begin, info.nbytes());
      sum_read += t[0][0].item<float>();
    }
  });
  const double t_full = time([&] {
    auto d = diffuse::io::load_safetensors(path.string());
    for (const auto& it : d) sum_mmap += it.value().sum().item<float>();  // read every byte
  });
  std::printf("file %d MB, %zu tensors, best of %d\n", mb, tensors.size(), repeats);
  std::printf("mmap open + views        %8.2f ms\n", t_mmap * 1e3);
  std::printf("mmap + read every byte   %8.2f ms\n", t_full * 1e3);
  std::printf("read file + copy tensors %8.2f ms  (%.1fx the mmap open)\n", t_read * 1e3, t_read / t_mmap);
  std::filesystem::remove(path);
  return sum_mmap == sum_mmap && sum_read == sum_read ? 0 : 1;
}
