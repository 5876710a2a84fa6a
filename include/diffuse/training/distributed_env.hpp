#pragma once
// Where a process stands in a multi-process run, read from the environment as torchrun sets it
// (PyTorch's launch contract, so torchrun --no-python, Slurm srun wrappers and Kubernetes
// PyTorchJobs start diffuse unchanged): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
// None of them set is a single process. Torch-free.
#include <charconv>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>

#include "diffuse/core/error.hpp"

namespace diffuse::training {

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // torchrun's default
  bool from_environment = false;  // false: none of the variables was set
};

namespace distributed_env_detail {

inline int parse_int(std::string_view name, const char* value, int lo, int hi) {
  const std::string_view s(value);
  int v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi)
    throw InputError(std::string(name) + "='" + std::string(s) + "' is not a whole number from " + std::to_string(lo) +
                     " to " + std::to_string(hi));
  return v;
}

}  // namespace distributed_env_detail

// `get` looks a variable up (null: unset); std::getenv in distributed_env(). Errors name the
// variable and its value: a half-set contract (RANK without WORLD_SIZE), WORLD_SIZE below 1,
// RANK outside [0, WORLD_SIZE), a port outside 1-65535, no MASTER_ADDR for several processes.
inline DistributedEnv distributed_env_from(const std::function<const char*(const char*)>& get) {
  using distributed_env_detail::parse_int;
  DistributedEnv e;
  const char* rank = get("RANK");
  const char* world = get("WORLD_SIZE");
  const char* local = get("LOCAL_RANK");
  const char* addr = get("MASTER_ADDR");
  const char* port = get("MASTER_PORT");
  if (!rank && !world && !local && !addr && !port) return e;
  e.from_environment = true;
  if (!rank || !world)
    throw InputError(std::string("the launch environment is incomplete: ") + (rank ? "WORLD_SIZE" : "RANK") +
                     " is unset (a multi-process run sets RANK and WORLD_SIZE together; `diffuse launch` or torchrun do)");
  e.world_size = parse_int("WORLD_SIZE", world, 1, 1 << 20);
  e.rank = parse_int("RANK", rank, 0, 1 << 20);
  if (e.rank >= e.world_size)
    throw InputError("RANK=" + std::to_string(e.rank) + " is not below WORLD_SIZE=" + std::to_string(e.world_size));
  e.local_rank = local ? parse_int("LOCAL_RANK", local, 0, 1 << 20) : e.rank;
  if (port) e.master_port = parse_int("MASTER_PORT", port, 1, 65535);
  if (addr && *addr) e.master_addr = addr;
  else if (e.world_size > 1)
    throw InputError("MASTER_ADDR is unset: the processes of a run of WORLD_SIZE=" + std::to_string(e.world_size) +
                     " need the address of rank 0's store");
  return e;
}

inline DistributedEnv distributed_env() {
  return distributed_env_from([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace diffuse::training
