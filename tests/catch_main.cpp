// The one Catch2 main, compiled once (about 17 s) and shared by the test executables.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
