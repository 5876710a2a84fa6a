// Control: the same includes and valid combinations compile, so the failures above are the rules.
#include "diffuse/pipeline/pipeline.hpp"
#include "diffuse/pipeline/sd3_generator.hpp"
#include "diffuse/process/rectified_flow.hpp"
#include "diffuse/timesteps/logit_normal.hpp"
#include "diffuse/training/objective.hpp"
using namespace diffuse;
training::Objective<process::RectifiedFlow, timesteps::LogitNormal, weighting::Uniform> objective;
pipeline::SD3Recipe::objective_type recipe_objective;
pipeline::SD3Generator::pipeline_type::objective_type generator_objective;
int main() { return 0; }
