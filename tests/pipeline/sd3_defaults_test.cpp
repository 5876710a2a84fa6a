// Generation defaults as the SD3.5 reference chooses them (sd3_infer.py, CONFIGS and main()'s
// fallbacks at commit fbf8f48): by the file's base name, then metadata, then tensors, then the
// fallback — Turbo and an unknown model included.
#include <catch2/catch.hpp>

#include "diffuse/pipeline/sd3_defaults.hpp"

namespace t_sd3_defaults {

using namespace diffuse::pipeline;
using Catch::Matchers::Contains;

SD3ModelIdentity named(std::string name, std::string family = "custom") {
  SD3ModelIdentity m;
  m.base_name = std::move(name);
  m.family = std::move(family);
  return m;
}

TEST_CASE("the defaults table is the reference's, by the file's base name", "[pipeline][defaults]") {
  struct Row {
    const char* name;
    const char* family;
    int steps;
    double cfg, shift;
    const char* sampler;
  };
  // sd3_infer.py CONFIGS.
  for (const auto& r : {Row{"sd3_medium", "SD3-medium", 50, 5.0, 1.0, "dpmpp_2m"},
                        Row{"sd3.5_medium", "SD3.5-medium", 50, 5.0, 3.0, "dpmpp_2m"},
                        Row{"sd3.5_large", "SD3.5-large", 40, 4.5, 3.0, "dpmpp_2m"},
                        Row{"sd3.5_large_turbo", "SD3.5-large", 4, 1.0, 3.0, "euler"}}) {
    INFO(r.name);
    const auto d = sd3_defaults(named(r.name, r.family));
    CHECK(d.config == r.name);
    CHECK(d.identified_by == "file name");
    CHECK(d.steps == r.steps);
    CHECK(d.cfg == r.cfg);
    CHECK(d.shift == r.shift);
    CHECK(d.sampler == r.sampler);
    CHECK(d.width == 1024);
    CHECK(d.height == 1024);
    CHECK(d.note.empty());
    CHECK(d.skip_layer_preset.has_value() == (std::string(r.name) == "sd3.5_medium"));
  }
  const auto p = *sd3_defaults(named("sd3.5_medium")).skip_layer_preset;
  CHECK(p.scale == 2.5);
  CHECK(p.start == 0.01);
  CHECK(p.end == 0.20);
  CHECK(p.layers == std::vector<int>{7, 8, 9});
  // The reference matches the name exactly: another spelling is not a CONFIGS key, and a name that
  // contradicts the tensors still decides (as there), with a note.
  CHECK(sd3_defaults(named("SD3.5_Large_Turbo")).identified_by != "file name");
  const auto odd = sd3_defaults(named("sd3.5_large_turbo", "SD3-medium"));
  CHECK(odd.config == "sd3.5_large_turbo");
  CHECK_THAT(odd.note, Contains("tensors are SD3-medium"));
}

TEST_CASE("Turbo is told from Large by name or metadata; tensors alone say Large and a note says why", "[pipeline][defaults]") {
  auto m = named("model", "SD3.5-large");
  auto d = sd3_defaults(m);
  CHECK(d.config == "sd3.5_large");
  CHECK(d.identified_by == "tensors");
  CHECK_THAT(d.note, Contains("Turbo"));
  m.metadata["modelspec.architecture"] = "stable-diffusion-v3.5-large-turbo";
  d = sd3_defaults(m);
  CHECK(d.config == "sd3.5_large_turbo");
  CHECK(d.identified_by == "metadata modelspec.architecture");
  CHECK(d.steps == 4);
  CHECK(d.sampler == "euler");
  m.metadata = {{"modelspec.title", "Stable Diffusion 3.5 Large Turbo"}};
  CHECK(sd3_defaults(m).config == "sd3.5_large_turbo");
  // Metadata that names another model than the tensors hold is not believed.
  m.metadata = {{"modelspec.architecture", "stable-diffusion-v3-medium"}};
  d = sd3_defaults(m);
  CHECK(d.config == "sd3.5_large");
  CHECK(d.identified_by == "tensors");
  CHECK_THAT(d.note, Contains("the tensors decide"));
  // A diffusers folder is known by its name (the Hugging Face repository's).
  auto folder = named("stable-diffusion-3.5-large-turbo", "SD3.5-large");
  folder.folder = true;
  CHECK(sd3_defaults(folder).config == "sd3.5_large_turbo");
  CHECK(sd3_defaults(folder).identified_by == "folder name");
  folder.base_name = "stable-diffusion-3-medium-diffusers";
  folder.family = "SD3-medium";
  CHECK(sd3_defaults(folder).config == "sd3_medium");
}

TEST_CASE("an unknown model gets the reference's fallback values and says so", "[pipeline][defaults]") {
  const auto d = sd3_defaults(named("my_finetune"));
  CHECK(d.config.empty());
  CHECK(d.identified_by == "fallback");
  CHECK(d.steps == 50);  // sd3_infer.py main(): config.get("steps", 50), ...
  CHECK(d.cfg == 5.0);
  CHECK(d.shift == 3.0);
  CHECK(d.sampler == "dpmpp_2m");
  CHECK(!d.skip_layer_preset);
  CHECK_THAT(d.note, Contains("unknown model (my_finetune") && Contains("fallback"));
  CHECK_THAT(d.source(), Contains("not in CONFIGS"));
  // Metadata of other model families names nothing here.
  auto m = named("x");
  m.metadata = {{"modelspec.architecture", "stable-diffusion-xl-v1-base"}, {"modelspec.title", "SDXL 1.0"}};
  CHECK(sd3_defaults(m).identified_by == "fallback");
  // Tensors of a known family decide for an unknown name.
  CHECK(sd3_defaults(named("my_finetune", "SD3.5-medium")).config == "sd3.5_medium");
}

TEST_CASE("a ControlNet's CONFIGS row replaces steps, CFG, sampler and shift; another name keeps the model's", "[pipeline][defaults][controlnet]") {
  // sd3_infer.py CONFIGS: every sd3.5_large_controlnet_* row is 60 steps, CFG 3.5, euler, shift 3.
  for (const char* name : {"sd3.5_large_controlnet_blur", "sd3.5_large_controlnet_canny", "sd3.5_large_controlnet_depth"}) {
    auto d = sd3_defaults(named("sd3.5_large", "SD3.5-large"));
    REQUIRE(d.steps == 40);
    apply_controlnet_defaults(d, name);
    CHECK(d.controlnet_config == name);
    CHECK(d.steps == 60);
    CHECK(d.cfg == 3.5);
    CHECK(d.sampler == "euler");
    CHECK(d.shift == 3.0);
    CHECK(d.config == "sd3.5_large");  // the model's row is still the model's
    CHECK_THAT(d.source(), Contains(name) && Contains("ControlNet"));
    CHECK_THAT(d.model_source(), Contains("CONFIGS[\"sd3.5_large\"]"));
  }
  auto d = sd3_defaults(named("sd3.5_large", "SD3.5-large"));
  apply_controlnet_defaults(d, "my_canny");
  CHECK(d.controlnet_config.empty());
  CHECK(d.steps == 40);
  CHECK(d.sampler == "dpmpp_2m");
  CHECK_THAT(d.note, Contains("my_canny") && Contains("no CONFIGS row"));
}

}  // namespace t_sd3_defaults
