// Must not compile: weighting::EDM weights the x0 error.
#include "diffuse/process/edm.hpp"
#include "diffuse/timesteps/uniform.hpp"
#include "diffuse/training/objective.hpp"
using namespace diffuse;
training::Objective<process::EDM<>, timesteps::Uniform, weighting::EDM, process::Eps> objective;
