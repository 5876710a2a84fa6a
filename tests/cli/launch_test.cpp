// `diffuse launch`: N local ranks with torchrun's environment, their output prefixed, the first
// failing rank's exit code, bad input exit 2; the trainers not yet data-parallel refuse a multi-process
// environment (`diffuse train` across processes: tests/pipeline/distributed_train_test.cpp).
#include <catch2/catch.hpp>

#include <chrono>
#include <string>

#include "test_util.hpp"

namespace t_cli_launch {

using namespace diffuse;
using Catch::Matchers::Contains;

TEST_CASE("launch starts the ranks with the launch environment and prefixes their lines", "[cli][distributed]") {
  const auto r = test::run_cli(
      "launch --nproc 3 --port 29777 -- sh -c 'echo r=$RANK w=$WORLD_SIZE l=$LOCAL_RANK a=$MASTER_ADDR p=$MASTER_PORT; "
      "echo to-stderr $RANK >&2; printf unended'");
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  for (int k = 0; k < 3; ++k) {
    const auto rank = std::to_string(k);
    CHECK_THAT(r.out, Contains("[rank " + rank + "] r=" + rank + " w=3 l=" + rank + " a=127.0.0.1 p=29777\n"));
    CHECK_THAT(r.out, Contains("[rank " + rank + "] unended\n"));
    CHECK_THAT(r.err, Contains("[rank " + rank + "] to-stderr " + rank + "\n"));
  }
}

TEST_CASE("launch exits with the first failing rank's code and stops the others", "[cli][distributed]") {
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = test::run_cli("launch --nproc 2 -- sh -c 'if [ $RANK = 1 ]; then exit 3; fi; sleep 60'");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(r.err);
  CHECK(r.exit_code == 3);
  CHECK_THAT(r.err, Contains("rank 1 exited with code 3"));
  CHECK(secs < 30);  // rank 0 was stopped, not waited for
  const auto missing = test::run_cli("launch --nproc 1 -- no-such-program-diffuse");
  CHECK(missing.exit_code == 127);
  CHECK_THAT(missing.err, Contains("[rank 0] cannot run 'no-such-program-diffuse'"));
}

TEST_CASE("launch's bad input and a bad launch environment exit 2", "[cli][distributed]") {
  CHECK(test::run_cli("launch --nproc 0 -- true").exit_code == 2);
  CHECK(test::run_cli("launch --nproc 2").exit_code == 2);  // no command
  CHECK(test::run_cli("launch --nproc 2 --port 0 -- true").exit_code == 2);
  CHECK(test::run_cli("launch --help").exit_code == 0);
  // A diffuse command line runs the program itself in each rank; the trainers check the environment first.
  const auto two = test::run_cli("launch --nproc 2 -- vae train --out /nonexistent/x");
  CHECK(two.exit_code == 2);
  CHECK_THAT(two.err, Contains("] diffuse: error: WORLD_SIZE=2 (rank "));  // whichever rank fails first; the other is stopped
  CHECK_THAT(two.err, Contains("`diffuse vae train` runs as one process"));
  const auto bad = test::run("WORLD_SIZE=0 RANK=0 " + std::string(DIFFUSE_CLI) + " train --out /nonexistent/x");
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Contains("WORLD_SIZE='0'"));
  const auto over = test::run("WORLD_SIZE=2 RANK=2 MASTER_ADDR=127.0.0.1 " + std::string(DIFFUSE_CLI) + " dpo --help");
  CHECK(over.exit_code == 0);  // --help needs no environment
  const auto over_run = test::run("WORLD_SIZE=2 RANK=2 MASTER_ADDR=127.0.0.1 " + std::string(DIFFUSE_CLI) + " vae train --out /nonexistent/x");
  CHECK(over_run.exit_code == 2);
  CHECK_THAT(over_run.err, Contains("RANK=2 is not below WORLD_SIZE=2"));
}

}  // namespace t_cli_launch
