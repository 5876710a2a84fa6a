#pragma once
// The umbrella header: the public API of diffuse. Include narrower headers to compile faster.
#include "diffuse/version.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/config.hpp"
#include "diffuse/core/torch_compat.hpp"
#include "diffuse/io/dtype.hpp"
#include "diffuse/io/safetensors_header.hpp"
#include "diffuse/io/safetensors_file.hpp"
#include "diffuse/io/safetensors.hpp"
#include "diffuse/io/model_family.hpp"
#include "diffuse/encoders/sentencepiece.hpp"
