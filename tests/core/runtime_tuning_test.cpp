// When tune_runtime asks OpenBLAS for its AVX-512 kernels (core/runtime_tuning.hpp); torch-free.
#include <catch2/catch.hpp>

#include "diffuse/core/runtime_tuning.hpp"

TEST_CASE("OpenBLAS kernel sets without AVX-512 are fallbacks only on an AVX-512 CPU", "[core][tuning]") {
  using diffuse::openblas_core_lacks_avx512;
  // what OpenBLAS 0.3.21 reported on the two machine kinds measured (docs/performance.md)
  CHECK(openblas_core_lacks_avx512("Prescott", true));  // a Xeon it did not recognise
  CHECK(openblas_core_lacks_avx512("Haswell", true));   // AMD Zen 5 (EPYC family 26)
  CHECK(openblas_core_lacks_avx512("Zen", true));
  CHECK(openblas_core_lacks_avx512("Sandybridge", true));
  for (const char* avx512 : {"SkylakeX", "skylakex", "Cooperlake", "SapphireRapids", "SAPPHIRERAPIDS"}) {
    INFO(avx512);
    CHECK_FALSE(openblas_core_lacks_avx512(avx512, true));
  }
  // no AVX-512 on the CPU: whatever OpenBLAS chose is all it can run
  for (const char* core : {"Prescott", "Haswell", "Zen", "SkylakeX"}) {
    INFO(core);
    CHECK_FALSE(openblas_core_lacks_avx512(core, false));
  }
  CHECK_FALSE(openblas_core_lacks_avx512(nullptr, true));
  CHECK_FALSE(openblas_core_lacks_avx512("", true));
}
