#pragma once
// What a training loop reports: a step's record, a run's result, and the callbacks through which
// it logs progress and asks whether to go on.
#include <filesystem>
#include <functional>
#include <string>

namespace diffuse::training {

struct StepRecord {
  int step = 0;
  double loss = 0, grad_norm = 0, lr = 0, seconds = 0;
};

struct TrainResult {
  int steps = 0;
  double seconds = 0, final_loss = 0, val_loss = 0, val_loss_ema = 0;
  bool resumed = false;
  std::filesystem::path checkpoint;
};

struct TrainCallbacks {
  std::function<void(const std::string&)> log;  // progress lines
  std::function<bool(int step)> keep_going;      // false stops after this step (with a checkpoint)
};

}  // namespace diffuse::training
