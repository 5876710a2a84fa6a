// Must not compile: v-prediction needs a variance-preserving process.
#include "diffuse/process/rectified_flow.hpp"
#include "diffuse/timesteps/uniform.hpp"
#include "diffuse/training/objective.hpp"
using namespace diffuse;
training::Objective<process::RectifiedFlow, timesteps::Uniform, weighting::Uniform, process::V> objective;
