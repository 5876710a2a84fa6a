// Must not compile: a generator of released checkpoints for a recipe whose conditioning is the
// small caption encoder, not the SD3 text stack the released files need.
#include "diffuse/pipeline/sd3_generator.hpp"
using namespace diffuse;
using Wrong = pipeline::BasicSD3Generator<pipeline::SD3Recipe>;
Wrong::pipeline_type::objective_type objective;
