// `diffuse launch --nproc N [--port P] -- COMMAND...`: starts N local processes with torchrun's
// environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; training/distributed_env.hpp),
// forwards their output line by line with a "[rank K] " prefix, and exits with the first failing
// rank's code after stopping the others. COMMAND is a diffuse command line (`train ...`), or any
// program when its first word is not a diffuse subcommand (torchrun --no-python's case).
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "command.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/training/distributed_env.hpp"

namespace diffuse::cli {
namespace {

struct LaunchOptions {
  int nproc = 0, port = 29500;
  std::string addr = "127.0.0.1";
  bool no_pin = false;
  std::vector<std::string> command;
};

// The CPUs this process may run on, split into `n` contiguous shares, one per rank: each rank's
// thread counts (usable_hardware_threads) then follow its share instead of all N ranks taking
// every core. Empty when there are fewer CPUs than ranks (nothing to split).
std::vector<cpu_set_t> cpu_shares(int n) {
  cpu_set_t all;
  CPU_ZERO(&all);
  if (::sched_getaffinity(0, sizeof all, &all) != 0) return {};
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &all)) cpus.push_back(c);
  if (static_cast<int>(cpus.size()) < n) return {};
  std::vector<cpu_set_t> shares(static_cast<std::size_t>(n));
  const auto total = static_cast<std::int64_t>(cpus.size());
  for (int r = 0; r < n; ++r) {
    CPU_ZERO(&shares[static_cast<std::size_t>(r)]);
    for (auto i = total * r / n; i < total * (r + 1) / n; ++i) CPU_SET(cpus[static_cast<std::size_t>(i)], &shares[static_cast<std::size_t>(r)]);
  }
  return shares;
}

struct Rank {
  pid_t pid = -1;
  int out = -1, err = -1;           // read ends of the child's stdout and stderr
  std::string out_line, err_line;  // a line not yet ended
  bool exited = false;
  int code = 0;
};

// Writes the complete lines of `buf` with the rank's prefix; the unfinished rest stays in `buf`.
void forward_lines(std::string& buf, int rank, FILE* to, bool flush_rest) {
  std::size_t start = 0;
  for (std::size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1)
    std::fprintf(to, "[rank %d] %.*s\n", rank, static_cast<int>(nl - start), buf.data() + start);
  buf.erase(0, start);
  if (flush_rest && !buf.empty()) {
    std::fprintf(to, "[rank %d] %s\n", rank, buf.c_str());
    buf.clear();
  }
  std::fflush(to);
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

bool is_diffuse_subcommand(const CLI::App& app, const std::string& word) {
  for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    if (sub->get_name() == word) return true;
  return false;
}

// SIGINT / SIGTERM to launch itself: the ranks live in process groups of their own (so that
// stopping one stops its children), so the terminal's Ctrl-C reaches them through here.
volatile std::sig_atomic_t pending_signal = 0;
extern "C" void note_signal(int sig) { pending_signal = sig; }

void run_launch(const LaunchOptions& o, bool diffuse_command) {
  if (o.nproc < 1) throw InputError("--nproc must be at least 1, got " + std::to_string(o.nproc));
  if (o.command.empty()) throw InputError("launch needs a command after --, e.g. `diffuse launch --nproc 2 -- train ...`");
  std::vector<std::string> argv_s;
  if (diffuse_command) argv_s.push_back("/proc/self/exe");
  argv_s.insert(argv_s.end(), o.command.begin(), o.command.end());
  std::vector<Rank> ranks(static_cast<std::size_t>(o.nproc));
  const auto shares = o.no_pin ? std::vector<cpu_set_t>{} : cpu_shares(o.nproc);
  struct sigaction sa {};
  sa.sa_handler = note_signal;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  for (int r = 0; r < o.nproc; ++r) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) throw Error(std::string("launch: pipe: ") + std::strerror(errno));
    const pid_t pid = ::fork();
    if (pid < 0) throw Error(std::string("launch: fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::setpgid(0, 0);  // a group of its own: stopping a rank stops what it started (sh -c's children)
      if (!shares.empty()) ::sched_setaffinity(0, sizeof(cpu_set_t), &shares[static_cast<std::size_t>(r)]);
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(err[1], STDERR_FILENO);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", o.addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(o.port).c_str(), 1);
      std::vector<char*> args;
      for (auto& a : argv_s) args.push_back(a.data());
      args.push_back(nullptr);
      if (diffuse_command) ::execv(args[0], args.data());
      else ::execvp(args[0], args.data());
      std::fprintf(stderr, "cannot run '%s': %s\n", args[0], std::strerror(errno));
      std::fflush(stderr);
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here: no window in which a signal would miss the group
    ::close(out[1]);
    ::close(err[1]);
    auto& k = ranks[static_cast<std::size_t>(r)];
    k.pid = pid, k.out = out[0], k.err = err[0];
  }
  int first_failure = 0, failed_rank = -1;
  std::chrono::steady_clock::time_point stopped_at, all_exited_at;
  bool killed = false, all_exited = false;
  const auto stop_all = [&](int sig) {
    for (auto& k : ranks)
      if (!k.exited) ::kill(-k.pid, sig);
  };
  char buf[65536];
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<std::pair<int, bool>> who;  // rank, is stderr
    for (int r = 0; r < o.nproc; ++r) {
      const auto& k = ranks[static_cast<std::size_t>(r)];
      if (k.out >= 0) fds.push_back({k.out, POLLIN, 0}), who.emplace_back(r, false);
      if (k.err >= 0) fds.push_back({k.err, POLLIN, 0}), who.emplace_back(r, true);
    }
    bool running = false;
    for (auto& k : ranks) running |= !k.exited;
    if (!running && !all_exited) all_exited = true, all_exited_at = std::chrono::steady_clock::now();
    // Every rank has exited: what still holds a pipe is a process one of them left behind; its
    // last lines get a second, not a wait for its end.
    if (!running && (fds.empty() || std::chrono::steady_clock::now() - all_exited_at > std::chrono::seconds(1))) break;
    if (const int sig = pending_signal; sig != 0 && failed_rank < 0) {
      std::fprintf(stderr, "launch: signal %d; stopping the ranks\n", sig);
      stop_all(sig);
      first_failure = 128 + sig, failed_rank = o.nproc, stopped_at = std::chrono::steady_clock::now();
    }
    if (!fds.empty() && ::poll(fds.data(), fds.size(), 200) < 0 && errno != EINTR)
      throw Error(std::string("launch: poll: ") + std::strerror(errno));
    if (fds.empty()) ::usleep(20000);
    if (failed_rank >= 0 && !killed && std::chrono::steady_clock::now() - stopped_at > std::chrono::seconds(10)) {
      stop_all(SIGKILL);  // a rank that ignores SIGTERM for 10 s
      killed = true;
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      auto& k = ranks[static_cast<std::size_t>(who[i].first)];
      auto& line = who[i].second ? k.err_line : k.out_line;
      FILE* to = who[i].second ? stderr : stdout;
      const ::ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        line.append(buf, static_cast<std::size_t>(n));
        forward_lines(line, who[i].first, to, false);
      } else if (n == 0 || errno != EINTR) {
        forward_lines(line, who[i].first, to, true);
        ::close(fds[i].fd);
        (who[i].second ? k.err : k.out) = -1;
      }
    }
    for (int r = 0; r < o.nproc; ++r) {
      auto& k = ranks[static_cast<std::size_t>(r)];
      int status = 0;
      if (k.exited || ::waitpid(k.pid, &status, WNOHANG) != k.pid) continue;
      k.exited = true;
      k.code = exit_code(status);
      if (k.code != 0 && failed_rank < 0) {
        first_failure = k.code, failed_rank = r, stopped_at = std::chrono::steady_clock::now();
        std::fprintf(stderr, "launch: rank %d exited with code %d; stopping the other ranks\n", r, k.code);
        stop_all(SIGTERM);
      }
    }
  }
  if (failed_rank >= 0) {
    std::fflush(stdout);
    std::fflush(stderr);
    std::exit(first_failure);
  }
}

}  // namespace

void require_one_process(const std::string& command) {
  const auto env = training::distributed_env();
  if (env.world_size > 1)
    throw InputError("WORLD_SIZE=" + std::to_string(env.world_size) + " (rank " + std::to_string(env.rank) + "): `diffuse " +
                     command + "` runs as one process; of the trainers only `diffuse train` (without --init) runs across processes so far");
}

void add_launch(CLI::App& app) {
  auto o = std::make_shared<LaunchOptions>();
  auto* cmd = app.add_subcommand(
      "launch", "Start N local processes with torchrun's environment (RANK, WORLD_SIZE, ...): diffuse launch --nproc N -- train ...");
  cmd->add_option("--nproc", o->nproc, "number of processes (ranks) on this machine")->required();
  cmd->add_option("--port", o->port, "MASTER_PORT: rank 0's store listens here (default 29500)")->check(CLI::Range(1, 65535));
  cmd->add_option("--addr", o->addr, "MASTER_ADDR (default 127.0.0.1)");
  cmd->add_flag("--no-pin", o->no_pin,
                "leave every rank on all of this process's CPUs (default: each rank gets its own contiguous share of them, "
                "when there are at least as many CPUs as ranks)");
  cmd->add_option("command", o->command,
                  "after --: a diffuse command line (train ...) or, when its first word is not a diffuse subcommand, any program")
      ->required();
  cmd->callback([o, &app] { run_launch(*o, !o->command.empty() && is_diffuse_subcommand(app, o->command.front())); });
}

}  // namespace diffuse::cli
