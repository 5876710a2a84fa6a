// The launch environment (torchrun's contract): read when set, a single process when not, and every
// malformed form an InputError naming the variable.
#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "diffuse/training/distributed_env.hpp"

namespace t_distributed_env {

using namespace diffuse;
using namespace diffuse::training;
using Catch::Matchers::Contains;

DistributedEnv env_of(const std::map<std::string, std::string>& vars) {
  return distributed_env_from([&](const char* name) -> const char* {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST_CASE("no launch variables is one process; torchrun's variables are read", "[distributed]") {
  const auto one = env_of({});
  CHECK_FALSE(one.from_environment);
  CHECK(one.rank == 0);
  CHECK(one.world_size == 1);
  const auto e = env_of({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29600"}});
  CHECK(e.from_environment);
  CHECK(e.rank == 3);
  CHECK(e.world_size == 4);
  CHECK(e.local_rank == 1);
  CHECK(e.master_addr == "node7");
  CHECK(e.master_port == 29600);
  const auto d = env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "10.0.0.1"}});
  CHECK(d.local_rank == 1);  // LOCAL_RANK defaults to RANK (one machine)
  CHECK(d.master_port == 29500);
  CHECK(env_of({{"RANK", "0"}, {"WORLD_SIZE", "1"}}).master_addr == "127.0.0.1");  // one process needs no store
}

TEST_CASE("a malformed launch environment names the variable", "[distributed]") {
  CHECK_THROWS_WITH(env_of({{"RANK", "0"}, {"WORLD_SIZE", "0"}}), Contains("WORLD_SIZE='0'"));
  CHECK_THROWS_WITH(env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}}), Contains("RANK=2 is not below WORLD_SIZE=2"));
  CHECK_THROWS_WITH(env_of({{"RANK", "-1"}, {"WORLD_SIZE", "2"}}), Contains("RANK='-1'"));
  CHECK_THROWS_WITH(env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}}), Contains("RANK='x'"));
  CHECK_THROWS_WITH(env_of({{"RANK", "1 "}, {"WORLD_SIZE", "2"}}), Contains("RANK='1 '"));
  CHECK_THROWS_WITH(env_of({{"RANK", "0"}}), Contains("WORLD_SIZE is unset"));
  CHECK_THROWS_WITH(env_of({{"WORLD_SIZE", "2"}}), Contains("RANK is unset"));
  CHECK_THROWS_WITH(env_of({{"MASTER_PORT", "29500"}}), Contains("incomplete"));
  CHECK_THROWS_WITH(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "70000"}}),
                    Contains("MASTER_PORT='70000'"));
  CHECK_THROWS_WITH(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}}), Contains("MASTER_ADDR is unset"));
  CHECK_THROWS_AS(env_of({{"RANK", "0"}, {"WORLD_SIZE", "0"}}), InputError);
}

}  // namespace t_distributed_env
