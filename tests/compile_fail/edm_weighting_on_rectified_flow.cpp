// Must not compile: weighting::EDM reads sigma_data from an EDM process.
#include "diffuse/process/rectified_flow.hpp"
#include "diffuse/timesteps/uniform.hpp"
#include "diffuse/training/objective.hpp"
using namespace diffuse;
training::Objective<process::RectifiedFlow, timesteps::Uniform, weighting::EDM, process::X0> objective;
