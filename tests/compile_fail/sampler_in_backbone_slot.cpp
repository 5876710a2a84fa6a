// Must not compile: a sampler where the backbone goes (slots 3 and 5 swapped).
#include "diffuse/pipeline/pipeline.hpp"
using namespace diffuse;
using Swapped = pipeline::Pipeline<pipeline::SD3Objective, encoders::CaptionConditioning, pipeline::EulerWithShift,
                                   autoencoder::PixelSpace, backbone::MMDiTBackbone<>>;
Swapped::objective_type objective;
