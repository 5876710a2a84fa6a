#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include "diffuse/core/error.hpp"
#include "diffuse/training/lr_schedule.hpp"

using namespace diffuse;
using training::scheduled_lr;

TEST_CASE("learning-rate schedules: constant, cosine and linear decay over the budget", "[training][lr]") {
  SECTION("constant keeps the base rate, scaled only by warmup") {
    CHECK(scheduled_lr(1e-3, 0.0, "constant") == Approx(1e-3));
    CHECK(scheduled_lr(1e-3, 0.9, "constant") == Approx(1e-3));
    CHECK(scheduled_lr(1e-3, 0.5, "constant", 0.25) == Approx(2.5e-4));
  }
  SECTION("cosine: full rate at the start, half at the middle, zero at the end, monotone") {
    CHECK(scheduled_lr(2.0, 0.0, "cosine") == Approx(2.0));
    CHECK(scheduled_lr(2.0, 0.5, "cosine") == Approx(1.0));
    CHECK(scheduled_lr(2.0, 1.0, "cosine") == Approx(0.0).margin(1e-15));
    CHECK(scheduled_lr(2.0, 0.25, "cosine") == Approx(1.0 + std::cos(std::numbers::pi / 4)));
    double prev = 3.0;
    for (int i = 0; i <= 100; ++i) {
      const double v = scheduled_lr(2.0, i / 100.0, "cosine");
      CHECK(v <= prev);
      prev = v;
    }
    // mean rate over the budget is half the base (the integral of (1 + cos(pi p)) / 2 over [0, 1])
    double mean = 0;
    const int n = 100000;
    for (int i = 0; i < n; ++i) mean += scheduled_lr(1.0, (i + 0.5) / n, "cosine") / n;
    CHECK(mean == Approx(0.5).epsilon(1e-6));
  }
  SECTION("linear falls straight to zero; progress outside [0, 1] is clamped") {
    CHECK(scheduled_lr(1.0, 0.3, "linear") == Approx(0.7));
    CHECK(scheduled_lr(1.0, 1.7, "linear") == Approx(0.0).margin(1e-15));
    CHECK(scheduled_lr(1.0, -0.5, "cosine") == Approx(1.0));
  }
  SECTION("the warm-up factor rises linearly to 1 and stays there") {
    CHECK(training::warmup_factor(0, 4) == Approx(0.25));
    CHECK(training::warmup_factor(2, 4) == Approx(0.75));
    CHECK(training::warmup_factor(3, 4) == 1.0);
    CHECK(training::warmup_factor(50, 4) == 1.0);
    CHECK(training::warmup_factor(0, 0) == 1.0);
  }
  SECTION("an unknown name is an input error that names the field") {
    CHECK_THROWS_AS(scheduled_lr(1.0, 0.5, "step"), InputError);
    try {
      training::check_lr_decay("exp", "vae.lr_decay");
      FAIL("no throw");
    } catch (const InputError& e) {
      CHECK(std::string(e.what()).find("vae.lr_decay") != std::string::npos);
      CHECK(std::string(e.what()).find("\"exp\"") != std::string::npos);
    }
  }
}
