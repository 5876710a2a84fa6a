#pragma once
// The processes of one data-parallel run, on LibTorch's c10d: a TCPStore served by rank 0 at
// MASTER_ADDR:MASTER_PORT (training/distributed_env.hpp reads torchrun's variables) and a Gloo
// process group over it. The trainers run on the CPU, so Gloo is the backend in every build
// (NCCL would need the trainers on CUDA tensors).
//
// What a trainer needs of it: rank 0's weights in every rank (broadcast), the sum of a flat
// gradient buffer over the ranks (in buckets, like DDP's), a word from rank 0 that a shared file
// is ready, and, when a peer dies or hangs, an error within the timeout that says which rank.
// Gloo has no average: callers weight each rank's loss by its share of the global batch, so the
// sum is the global mean (the same as SUM then divide by N when the shares are equal).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1  // ProcessGroupGloo.hpp is empty without it (libgloo-dev provides its headers)
#endif

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "diffuse/core/error.hpp"
#include "diffuse/training/distributed_env.hpp"

namespace diffuse::training {

struct ProcessGroupOptions {
  // How long a collective, joining, or a store read may wait for the other ranks before the run
  // stops with an error naming the rank it waited for.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  // Gradient all-reduce buckets: DDP's default bucket_cap_mb = 25.
  std::int64_t bucket_bytes = std::int64_t{25} << 20;
};

// A collective that failed: a peer died, hung past the timeout, or the store is gone.
class PeerError : public Error {
 public:
  using Error::Error;
};

class ProcessGroup {
 public:
  // Joins the run `env` describes (world_size > 1). Rank 0 serves the store and waits for the
  // others; an unreachable store is an InputError naming the address tried.
  ProcessGroup(const DistributedEnv& env, ProcessGroupOptions o = {}) : env_(env), o_(o) {
    if (env.world_size < 2) throw InputError("ProcessGroup: a run of one process needs no process group");
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = static_cast<std::size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = o.timeout;
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    } catch (const std::exception& e) {
      if (env.rank == 0)
        throw InputError(prefix() + "cannot serve the store at " + address() + " or not every rank joined within " +
                         seconds(o.timeout) + " (" + first_line(e.what()) + ")");
      throw InputError(prefix() + "cannot reach the store at " + address() + " (MASTER_ADDR:MASTER_PORT) within " +
                       seconds(o.timeout) + " (" + first_line(e.what()) + ")");
    }
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    host_ = host;
    set("diffuse/pid/" + std::to_string(env.rank), host_ + " " + std::to_string(::getpid()));
    set("diffuse/at/" + std::to_string(env.rank), "-1");
    auto opts = c10d::ProcessGroupGloo::Options::create(o.timeout);
    // The network interface, as PyTorch chooses it: GLOO_SOCKET_IFNAME when set; loopback when rank
    // 0 is on this machine's loopback; else the address this host's name resolves to.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    const bool local = env.master_addr == "localhost" || env.master_addr.rfind("127.", 0) == 0 || env.master_addr == "::1";
    try {
      opts->devices.push_back(ifname && *ifname ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                              : local           ? c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr)
                                                : c10d::ProcessGroupGloo::createDefaultDevice());
    } catch (const std::exception& e) {
      throw InputError(prefix() + "no network device for Gloo (" + (ifname && *ifname ? "GLOO_SOCKET_IFNAME=" + std::string(ifname) : "this host's name") +
                       "): " + first_line(e.what()));
    }
    opts->threads = 2;
    try {
      pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, env.rank, env.world_size, opts);
    } catch (const std::exception& e) {
      throw PeerError(prefix() + "the process group did not form within " + seconds(o.timeout) + " (" + first_line(e.what()) + ")");
    }
  }

  int rank() const { return env_.rank; }
  int size() const { return env_.world_size; }
  bool lead() const { return env_.rank == 0; }
  const ProcessGroupOptions& options() const { return o_; }
  // Seconds spent in all-reduces and broadcasts so far (the trainer reports it against its steps).
  double collective_seconds() const { return collective_seconds_; }

  // Every rank's tensors become rank 0's (in place; each contiguous, the same shapes everywhere).
  void broadcast(std::vector<torch::Tensor> tensors, const std::string& what) {
    collective(what, -1, [&] {
      for (auto& t : tensors) {
        std::vector<torch::Tensor> one{t};
        pg_->broadcast(one)->wait();
      }
    });
  }

  // `flat` (contiguous, 1-d) becomes its sum over the ranks, in place: buckets of about
  // options().bucket_bytes, all started before the first is waited for.
  void sum(const torch::Tensor& flat, int step, const std::string& what) {
    if (!flat.is_contiguous() || flat.dim() != 1) throw Error("ProcessGroup::sum: needs a contiguous 1-d tensor");
    // Where this rank is, for the others' diagnosis of a hang: once a step (a store write is a round
    // trip to rank 0's store thread, up to milliseconds when the ranks are pinned to one core each).
    if (step != at_step_) set("diffuse/at/" + std::to_string(env_.rank), std::to_string(step)), at_step_ = step;
    collective(what, step, [&] {
      const std::int64_t per = std::max<std::int64_t>(1, o_.bucket_bytes / static_cast<std::int64_t>(flat.element_size()));
      const auto n = (flat.numel() + per - 1) / per;
      std::vector<std::vector<torch::Tensor>> buckets;
      std::vector<c10::intrusive_ptr<c10d::Work>> work;
      buckets.reserve(static_cast<std::size_t>(n));  // allreduce takes each bucket's vector by reference
      work.reserve(static_cast<std::size_t>(n));
      for (std::int64_t at = 0; at < flat.numel(); at += per) {
        buckets.push_back({flat.narrow(0, at, std::min(per, flat.numel() - at))});
        work.push_back(pg_->allreduce(buckets.back()));
      }
      for (auto& w : work) w->wait();
    });
  }

  // Rank 0 says that `name` (e.g. the run's files) is ready; the others wait for it as long as
  // rank 0 is there (a feature cache may take longer than the timeout to build), each timeout
  // period telling `waiting` so.
  void announce(const std::string& name) { set("diffuse/ready/" + name, "1"); }
  template <class Log>
  void wait_for(const std::string& name, Log&& waiting) {
    const std::string key = "diffuse/ready/" + name;
    for (;;) {
      try {
        store_->wait({key}, o_.timeout);
        return;
      } catch (const std::exception& e) {
        bool there = false;
        try {
          there = store_->check({key});
        } catch (const std::exception&) {
          throw PeerError(prefix() + "rank 0, which serves the store at " + address() + ", is gone (" + first_line(e.what()) + ")");
        }
        if (there) return;
        waiting(prefix() + "still waiting for rank 0: " + name);
      }
    }
  }

 private:
  template <class F>
  void collective(const std::string& what, int step, F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      f();
    } catch (const std::exception& e) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      throw PeerError(prefix() + what + (step >= 0 ? " at step " + std::to_string(step) : std::string()) + " failed after " +
                      std::to_string(static_cast<int>(s)) + " s: " + diagnose(step) + " (" + first_line(e.what()) + ")");
    }
    collective_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  // Which rank the failure is about: one on this host whose process is gone, else one that did
  // not reach this step's exchange, else rank 0 when its store is gone.
  std::string diagnose(int step) const {
    std::vector<std::string> gone, behind;
    try {
      for (int k = 0; k < env_.world_size; ++k) {
        if (k == env_.rank) continue;
        const auto rk = std::to_string(k);
        if (store_->check({"diffuse/pid/" + rk})) {
          const auto v = get("diffuse/pid/" + rk);
          const auto sp = v.rfind(' ');
          const auto pid = static_cast<pid_t>(std::stol(v.substr(sp + 1)));
          if (v.substr(0, sp) == host_ && !alive(pid)) {
            gone.push_back("rank " + rk + " (pid " + std::to_string(pid) + ") has exited");
            continue;
          }
        }
        if (step >= 0 && store_->check({"diffuse/at/" + rk})) {
          const int at = std::stoi(get("diffuse/at/" + rk));
          if (at < step)
            behind.push_back("rank " + rk + " did not reach it (its last exchange was step " + std::to_string(at) + ")");
        }
      }
    } catch (const std::exception&) {
      return "rank 0, which serves the store at " + address() + ", is gone";
    }
    auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& x : v) s += (s.empty() ? "" : "; ") + x;
      return s;
    };
    if (!gone.empty()) return join(gone);
    if (!behind.empty()) return join(behind);
    std::string others;
    for (int k = 0; k < env_.world_size; ++k)
      if (k != env_.rank) others += (others.empty() ? "" : ", ") + std::to_string(k);
    return "no answer from rank" + std::string(env_.world_size > 2 ? "s " : " ") + others + " within " + seconds(o_.timeout) +
           " (a rank hung, or a connection was lost)";
  }
  // Whether process `pid` on this host still runs (a killed process its parent has not yet
  // reaped, a zombie, does not).
  static bool alive(pid_t pid) {
    if (::kill(pid, 0) != 0) return errno != ESRCH;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    const auto close = line.rfind(')');  // the state follows the command name in parentheses
    return close == std::string::npos || close + 2 >= line.size() || (line[close + 2] != 'Z' && line[close + 2] != 'X');
  }

  void set(const std::string& key, const std::string& value) {
    try {
      store_->set(key, std::vector<std::uint8_t>(value.begin(), value.end()));
    } catch (const std::exception& e) {
      throw PeerError(prefix() + "rank 0, which serves the store at " + address() + ", is gone (" + first_line(e.what()) + ")");
    }
  }
  std::string get(const std::string& key) const {
    const auto v = store_->get(key);
    return std::string(v.begin(), v.end());
  }
  std::string prefix() const { return "rank " + std::to_string(env_.rank) + " of " + std::to_string(env_.world_size) + ": "; }
  std::string address() const { return env_.master_addr + ":" + std::to_string(env_.master_port); }
  static std::string seconds(std::chrono::milliseconds t) {
    char b[32];
    std::snprintf(b, sizeof b, "%g s", static_cast<double>(t.count()) / 1000.0);
    return b;
  }
  static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

  DistributedEnv env_;
  ProcessGroupOptions o_;
  std::string host_;
  c10::intrusive_ptr<c10d::TCPStore> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  double collective_seconds_ = 0;
  int at_step_ = -1;  // the step last written to the store
};

}  // namespace diffuse::training
