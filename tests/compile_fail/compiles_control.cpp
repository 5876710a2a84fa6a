// Control: the same includes and a valid objective compile, so the failures above are the rules.
#include "diffuse/process/rectified_flow.hpp"
#include "diffuse/timesteps/logit_normal.hpp"
#include "diffuse/training/objective.hpp"
using namespace diffuse;
training::Objective<process::RectifiedFlow, timesteps::LogitNormal, weighting::Uniform> objective;
int main() { return 0; }
