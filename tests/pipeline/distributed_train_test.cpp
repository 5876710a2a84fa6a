// Issue 32: `diffuse train` over several processes (c10d, Gloo, localhost). Two ranks with global
// batch B take the same steps as one process with batch B; a run resumes with another number of
// ranks; a rank that dies or hangs stops the other with a message naming it; the last checkpoint
// stays loadable.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include <torch/torch.h>

#include "diffuse/core/config.hpp"
#include "diffuse/io/safetensors.hpp"
#include "test_util.hpp"
#include "tiny_training.hpp"

namespace t_distributed_train {

using namespace diffuse;
using Catch::Matchers::Contains;
using test::losses;
using test::TempDir;

// A port of this test process's own, so that concurrent test runs do not meet on one store.
// Below Linux's ephemeral range (32768-60999), where Gloo's own connections take their ports.
int port(int k) { return 10000 + static_cast<int>(::getpid() % 5000) * 4 + k; }

// max |a - b| / max |a| over the tensors of two safetensors files (the same names in both).
double weights_rel_diff(const std::filesystem::path& a, const std::filesystem::path& b) {
  io::SafetensorsFile fa(a.string()), fb(b.string());
  double diff = 0, scale = 0;
  for (const auto& info : fa.tensors()) {
    const auto ta = io::load_tensor(fa, info).to(torch::kFloat64);
    const auto tb = io::load_tensor(fb, fb.info(info.name)).to(torch::kFloat64);
    diff = std::max(diff, (ta - tb).abs().max().item<double>());
    scale = std::max(scale, ta.abs().max().item<double>());
  }
  return diff / scale;
}

void check_same_run(const std::vector<double>& got, const std::vector<double>& want, const std::filesystem::path& got_ckpt,
                    const std::filesystem::path& want_ckpt) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(std::abs(got[i] - want[i]) <= 1e-5 * std::abs(want[i]));
  }
  for (const char* f : {"model.safetensors", "ema.safetensors"}) {
    INFO(f);
    CHECK(weights_rel_diff(want_ckpt / f, got_ckpt / f) < 1e-5);
  }
}

TEST_CASE("2 ranks take 1 process's 20 steps within 1e-5, and a run resumes with the other number of ranks", "[pipeline][cli][distributed]") {
  TempDir d;
  auto c = test::tiny_config();
  c.steps = 20;
  c.workers = 1;
  c.lr_decay = "constant";  // a shorter first leg below must not change the schedule
  c.checkpoint_every = 10;
  std::ofstream(d / "cfg.json") << config_to_string(c);
  const auto cfg = " --config " + (d / "cfg.json").string();
  auto train = [&](int ranks, int port_k, const std::string& args) {
    const auto r = ranks == 1 ? test::run_cli("train " + args)
                              : test::run_cli("launch --nproc 2 --port " + std::to_string(port(port_k)) + " -- train " + args);
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    return r;
  };
  train(1, 0, cfg + " --out " + (d / "one").string());
  const auto two = train(2, 0, cfg + " --out " + (d / "two").string());
  CHECK_THAT(two.err, Contains("[rank 0] data parallel over 2 processes: global batch 8, 4 examples a rank"));
  CHECK_THAT(two.out, Contains("[rank 0] trained 20 steps"));
  CHECK(two.out.find("[rank 1] trained") == std::string::npos);  // rank 0 alone reports and writes
  const auto want = losses(d / "one" / "metrics.jsonl");
  REQUIRE(want.size() == 20);
  check_same_run(losses(d / "two" / "metrics.jsonl"), want, d / "two" / "ckpt-0000020", d / "one" / "ckpt-0000020");
  CHECK(test::read_text(d / "two" / "config.json") == test::read_text(d / "one" / "config.json"));

  // 10 steps on 2 ranks, the rest on 1; and the reverse.
  train(2, 1, cfg + " --out " + (d / "2to1").string() + " --steps 10");
  train(1, 0, "--out " + (d / "2to1").string() + " --resume --steps 20");
  check_same_run(losses(d / "2to1" / "metrics.jsonl"), want, d / "2to1" / "ckpt-0000020", d / "one" / "ckpt-0000020");
  train(1, 0, cfg + " --out " + (d / "1to2").string() + " --steps 10");
  const auto resumed = train(2, 2, "--out " + (d / "1to2").string() + " --resume --steps 20");
  CHECK_THAT(resumed.err, Contains("[rank 0] resumed at step 10"));
  check_same_run(losses(d / "1to2" / "metrics.jsonl"), want, d / "1to2" / "ckpt-0000020", d / "one" / "ckpt-0000020");
}

// Starts ranks 0 and 1 of a long run as separate processes (not through launch, which would stop
// the survivor itself), waits until rank 0 has logged `steps` steps, then does `fault` to rank 1.
struct TwoRanks {
  pid_t pid[2] = {-1, -1};
  std::filesystem::path out, log[2];
};

TwoRanks start_two(const std::filesystem::path& d, const std::string& name, int port_k, int steps) {
  auto c = test::tiny_config();
  c.steps = 100000;
  c.workers = 1;
  c.checkpoint_every = 5;
  c.log_every = 1000;
  std::ofstream(d / "long.json") << config_to_string(c);
  TwoRanks t;
  t.out = d / name;
  for (int r = 0; r < 2; ++r) {
    t.log[r] = d / (name + std::to_string(r) + ".log");
    t.pid[r] = test::start_cli("train --config " + (d / "long.json").string() + " --out " + t.out.string() + " --dist-timeout 4",
                               t.log[r],
                               "RANK=" + std::to_string(r) + " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port(port_k)));
  }
  for (int i = 0; i < 3000; ++i) {  // up to ~2 minutes
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    if (std::filesystem::exists(t.out / "metrics.jsonl") && losses(t.out / "metrics.jsonl").size() >= static_cast<std::size_t>(steps)) break;
  }
  return t;
}

// Waits up to `seconds` for `pid` to exit; its exit code, or -1 when it did not exit in time.
int wait_exit(pid_t pid, double seconds) {
  int status = 0;
  for (int i = 0; i < seconds * 50; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

TEST_CASE("a rank that dies or hangs stops the other within the timeout, naming it; the checkpoint resumes", "[pipeline][cli][distributed]") {
  TempDir d;
  for (const int sig : {SIGKILL, SIGSTOP}) {
    INFO((sig == SIGKILL ? "killed" : "stopped"));
    const auto name = std::string(sig == SIGKILL ? "killed" : "hung");
    auto t = start_two(d.path(), name, sig == SIGKILL ? 0 : 1, 12);
    REQUIRE(losses(t.out / "metrics.jsonl").size() >= 12);  // checkpoints at 5 and 10 are behind
    ::kill(t.pid[1], sig);
    if (sig == SIGKILL) ::waitpid(t.pid[1], nullptr, 0);
    const auto t0 = std::chrono::steady_clock::now();
    const int code = wait_exit(t.pid[0], 60);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (sig == SIGSTOP) {
      ::kill(t.pid[1], SIGKILL);
      ::waitpid(t.pid[1], nullptr, 0);
    }
    if (code < 0) ::kill(t.pid[0], SIGKILL), ::waitpid(t.pid[0], nullptr, 0);
    const auto log = test::read_text(t.log[0]);
    INFO(log);
    CHECK(code == 1);
    CHECK(secs < (sig == SIGKILL ? 10 : 4 + 10));  // a closed connection at once; a hang after --dist-timeout 4
    CHECK_THAT(log, Contains("rank 0 of 2: the gradient exchange at step") || Contains("rank 0 of 2: the loss exchange at step") ||
                        Contains("rank 0 of 2: the step's control exchange at step"));
    if (sig == SIGKILL) CHECK_THAT(log, Contains("rank 1 (pid " + std::to_string(t.pid[1]) + ") has exited"));
    else CHECK_THAT(log, Contains("rank 1"));
    CHECK_THAT(log, Contains("The last checkpoint (state.json) is intact"));
    // One process continues the run from its checkpoint.
    const auto r = test::run_cli("train --out " + t.out.string() + " --resume --steps 16");
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.err, Contains("resumed at step 1"));
  }
}

TEST_CASE("a rank that cannot reach the store says which address it tried; bad launch input exits 2", "[pipeline][cli][distributed]") {
  const auto p = std::to_string(port(3));
  const auto r = test::run("env RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + p + " " + std::string(DIFFUSE_CLI) +
                           " train --out /nonexistent/x --dist-timeout 2");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("rank 1 of 2: cannot reach the store at 127.0.0.1:" + p));
  const auto small = test::run_cli("launch --nproc 3 --port " + std::to_string(port(2)) + " -- train --batch 2 --out /nonexistent/y");
  CHECK(small.exit_code != 0);
  CHECK_THAT(small.err, Contains("batch 2 is smaller than the 3 processes"));
}

}  // namespace t_distributed_train
