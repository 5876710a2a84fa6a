#pragma once
// Data parallelism inside one process: a fixed set of worker threads, each running one shard of a
// training batch (its own forward and backward on its own model replica) with one intra-op thread.
//
// Why: the shapes model's products are small (2432 x 128 x 384 at batch 32), and LibTorch's
// intra-op threading gains almost nothing on them: on the 2-core CI machine one training pinned to
// one core ran 7.8 it/s, the same as one training on both cores, while two pinned trainings ran at
// 7.8 it/s each at the same time (docs/experiments/training_log.md, 2026-11-29). Splitting the batch over the
// cores, one thread each, turns that idle second core into steps.
//
// Each worker sets its own intra-op thread count to 1 (LibTorch keeps it per thread for OpenMP) and
// runs its shard; OpenBLAS's thread count is process-wide, so `run` holds it at 1 while the shards
// run and restores it after (core/blas_threads.hpp).
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>

#include "diffuse/core/blas_threads.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/training/flat_adamw.hpp"

namespace diffuse::training {

class ShardPool {
 public:
  explicit ShardPool(int workers) {
    if (workers < 1) throw InputError("ShardPool: need at least one worker");
    for (int k = 0; k < workers; ++k) threads_.emplace_back([this, k] { loop(k); });
  }
  ~ShardPool() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  ShardPool(const ShardPool&) = delete;
  ShardPool& operator=(const ShardPool&) = delete;

  int size() const { return static_cast<int>(threads_.size()); }

  // Runs job(k) for every worker k, each on its own thread, and returns when all have finished.
  // The first exception a shard threw is rethrown here (after every shard has stopped).
  void run(const std::function<void(int)>& job) {
    SingleThreadedBlas blas;  // each shard's products on its own core, not OpenBLAS's pool
    std::unique_lock lock(mutex_);
    job_ = &job;
    pending_ = size();
    error_ = nullptr;
    ++generation_;
    wake_.notify_all();
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void loop(int k) {
    at::set_num_threads(1);
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job = nullptr;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      std::exception_ptr err;
      try {
        (*job)(k);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard lock(mutex_);
      if (err && !error_) error_ = err;
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* job_ = nullptr;
  std::uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

// Makes `replica` (a module of the same structure) a shard's copy of `model`: its parameters become
// views of the model's, so an optimizer step on the model reaches it, its buffers copies; returns
// its gradients as one buffer of its own (flat_adamw.hpp), to be added to the model's after a step.
template <class Holder>
torch::Tensor share_parameters(Holder& model, Holder& replica) {
  torch::NoGradGuard g;
  const auto params = model->parameters();
  auto rp = replica->parameters();
  for (std::size_t i = 0; i < rp.size(); ++i) rp[i].set_data(params[i]);
  auto src = model->buffers(), dst = replica->buffers();
  for (std::size_t i = 0; i < dst.size(); ++i) dst[i].copy_(src[i]);
  return gradients_into_one(rp);
}

}  // namespace diffuse::training
