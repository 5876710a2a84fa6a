// Must not compile: slots swapped (a timestep distribution where the weighting goes).
#include "diffuse/process/rectified_flow.hpp"
#include "diffuse/timesteps/logit_normal.hpp"
#include "diffuse/timesteps/uniform.hpp"
#include "diffuse/training/objective.hpp"
using namespace diffuse;
training::Objective<process::RectifiedFlow, timesteps::Uniform, timesteps::LogitNormal> objective;
