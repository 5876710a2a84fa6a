#pragma once
// The library version; CMake reads it from here (one source of truth).
#define DIFFUSE_VERSION_MAJOR 0
#define DIFFUSE_VERSION_MINOR 1
#define DIFFUSE_VERSION_PATCH 0
#define DIFFUSE_VERSION_STRING "0.1.0"
