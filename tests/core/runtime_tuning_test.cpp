// When tune_runtime asks OpenBLAS for its AVX-512 kernels (core/runtime_tuning.hpp), and what
// DIFFUSE_CPU_KERNELS turns off (core/cpu_features.hpp); torch-free.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

#include "diffuse/core/runtime_tuning.hpp"
#include "test_util.hpp"

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

TEST_CASE("DIFFUSE_CPU_KERNELS=generic turns the library's AVX-512 choices off; a bad value is refused", "[core][tuning]") {
  using diffuse::cpu_kernels_generic_value;
  CHECK_FALSE(cpu_kernels_generic_value(nullptr));
  CHECK_FALSE(cpu_kernels_generic_value(""));
  CHECK_FALSE(cpu_kernels_generic_value("native"));
  CHECK_FALSE(cpu_kernels_generic_value("NATIVE"));
  CHECK(cpu_kernels_generic_value("generic"));
  CHECK(cpu_kernels_generic_value("Generic"));
  CHECK_THROWS_AS(cpu_kernels_generic_value("avx2"), diffuse::InputError);
  CHECK_THROWS_WITH(cpu_kernels_generic_value("avx2"), Catch::Contains("DIFFUSE_CPU_KERNELS=avx2"));
  // This process: the library may use what the CPU has, unless the variable says generic (the
  // suite's second pass, scripts/test.sh).
  const bool generic = cpu_kernels_generic_value(std::getenv("DIFFUSE_CPU_KERNELS"));
  CHECK(diffuse::cpu_kernels_generic() == generic);
  CHECK(diffuse::use_avx512f() == (diffuse::cpu_has_avx512f() && !generic));
  CHECK(diffuse::use_avx512() == (diffuse::cpu_has_avx512() && !generic));
  CHECK(diffuse::use_avx512_bf16() == (diffuse::cpu_has_avx512_bf16() && !generic));
  if (generic) CHECK_FALSE(diffuse::openblas_without_avx512());  // tune_runtime leaves OpenBLAS alone
}

TEST_CASE("GLIBC_TUNABLES gets malloc's huge pages added, other tunables kept, a hugetlb choice left alone", "[core][tuning]") {
  using diffuse::tunables_with_huge_pages;
  CHECK(tunables_with_huge_pages(nullptr) == "glibc.malloc.hugetlb=1");
  CHECK(tunables_with_huge_pages("") == "glibc.malloc.hugetlb=1");
  CHECK(tunables_with_huge_pages("glibc.malloc.arena_max=2") == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1");
  CHECK(tunables_with_huge_pages("glibc.malloc.hugetlb=0").empty());  // the user's choice
  CHECK(tunables_with_huge_pages("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2").empty());
}

#ifdef DIFFUSE_CLI
TEST_CASE("the diffuse program refuses a bad DIFFUSE_CPU_KERNELS with exit code 2", "[core][tuning][cli]") {
  const auto r = diffuse::test::run(std::string("DIFFUSE_CPU_KERNELS=fast ") + DIFFUSE_CLI + " inspect --help");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("DIFFUSE_CPU_KERNELS=fast") && Catch::Contains("native") && Catch::Contains("generic"));
  CHECK(diffuse::test::run(std::string("DIFFUSE_CPU_KERNELS=generic ") + DIFFUSE_CLI + " inspect --help").exit_code == 0);
}
#endif
