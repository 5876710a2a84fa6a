#pragma once
// A text-to-image generator as one type (SD3 paper, sections 2-4): what is trained (objective =
// forward process x timestep distribution x loss weighting), what conditions it (a text encoder
// giving context tokens and a pooled vector), the network (backbone), the space it works in
// (autoencoder with its latent format) and how it is sampled (method x sigma schedule).
//
//   using SD3Recipe = Pipeline<training::Objective<process::RectifiedFlow, timesteps::LogitNormal, weighting::Uniform>,
//                              encoders::CaptionConditioning, backbone::MMDiTBackbone<backbone::QKNorm::RMS>,
//                              autoencoder::FrozenKL<autoencoder::SD3LatentFormat>,
//                              sampling::ScheduledSampler<sampling::Euler, sampling::ShiftedLinear>>;
//
// Every slot is checked when the type is named, with a message that says which slot and what
// fits there (docs/pipeline.md); nothing is dispatched at run time.
#include <string>
#include <type_traits>
#include <vector>

#include <torch/types.h>

#include "diffuse/autoencoder/frozen_kl.hpp"
#include "diffuse/autoencoder/pixel_space.hpp"
#include "diffuse/backbone/mmdit_backbone.hpp"
#include "diffuse/encoders/caption_conditioning.hpp"
#include "diffuse/encoders/sd3_text_conditioning.hpp"
#include "diffuse/process/rectified_flow.hpp"
#include "diffuse/sampling/scheduled_sampler.hpp"
#include "diffuse/timesteps/logit_normal.hpp"
#include "diffuse/training/objective.hpp"
#include "diffuse/weighting/weighting.hpp"

namespace diffuse::pipeline {

template <class T> struct is_objective : std::false_type {};
template <class P, class D, class W, class Tg> struct is_objective<training::Objective<P, D, W, Tg>> : std::true_type {};

template <class C>
concept ConditioningEncoder = requires(const C& c, const std::vector<std::string>& texts) {
  { c.encode(texts) } -> std::same_as<encoders::TextFeatures>;
  { c.width() } -> std::convertible_to<int>;         // context width
  { c.pooled_width() } -> std::convertible_to<int>;  // pooled vector width
  { c.length() } -> std::convertible_to<int>;
  { c.fingerprint() } -> std::convertible_to<std::string>;
  { C::name };
};

template <class B>
concept BackbonePolicy = requires(const backbone::MMDiTConfig& c) {
  typename B::module_type;
  { B::create(c) } -> std::same_as<typename B::module_type>;
  { B::configure(c) } -> std::same_as<backbone::MMDiTConfig>;
  { B::name };
};

template <class A>
concept AutoencoderPolicy = requires(const A& a, const torch::Tensor& x, const std::string& weights) {
  A(weights);
  { a.encode(x) } -> std::same_as<torch::Tensor>;
  { a.decode(x) } -> std::same_as<torch::Tensor>;
  { a.latent_channels() } -> std::convertible_to<int>;
  { a.factor() } -> std::convertible_to<int>;
  { a.fingerprint() } -> std::convertible_to<std::string>;
  { A::name };
};

template <class S>
concept SamplerPolicy = requires(const S& s, const sampling::Denoiser& d, const torch::Tensor& x) {
  { s.sample(d, x, 1) } -> std::same_as<sampling::SampleResult>;
  { s.schedule.sigmas(1) } -> std::same_as<std::vector<double>>;
};

template <class ObjectiveT, class ConditioningT, class BackboneT, class AutoencoderT, class SamplerT>
struct Pipeline {
  static_assert(is_objective<ObjectiveT>::value,
                "Pipeline slot 1 (objective): expected training::Objective<Process, Timesteps, Weighting[, Target]>, "
                "e.g. Objective<process::RectifiedFlow, timesteps::LogitNormal, weighting::Uniform>");
  static_assert(ConditioningEncoder<ConditioningT>,
                "Pipeline slot 2 (conditioning): expected a text encoder policy with encode(texts) -> TextFeatures, "
                "width(), pooled_width(), length(), fingerprint() and a name, e.g. encoders::CaptionConditioning");
  static_assert(BackbonePolicy<BackboneT>,
                "Pipeline slot 3 (backbone): expected a backbone policy with module_type, create(config) and "
                "configure(config), e.g. backbone::MMDiTBackbone<backbone::QKNorm::RMS>");
  static_assert(AutoencoderPolicy<AutoencoderT>,
                "Pipeline slot 4 (autoencoder): expected an autoencoder policy constructible from a weights path, with "
                "encode, decode, latent_channels, factor and fingerprint, e.g. autoencoder::PixelSpace or "
                "autoencoder::FrozenKL<autoencoder::SD3LatentFormat>");
  static_assert(SamplerPolicy<SamplerT>,
                "Pipeline slot 5 (sampler): expected sampling::ScheduledSampler<Method, Schedule>, e.g. "
                "ScheduledSampler<sampling::Euler, sampling::ShiftedLinear>");

  using objective_type = ObjectiveT;
  using conditioning_type = ConditioningT;
  using backbone_type = BackboneT;
  using autoencoder_type = AutoencoderT;
  using sampler_type = SamplerT;
  using process_type = typename ObjectiveT::process_type;

  // A readable description of the recipe, stored with trained models.
  static std::string describe() {
    auto s = [](std::string_view v) { return std::string(v); };
    return "objective=" + s(process_type::name) + "/" + s(ObjectiveT::timesteps_type::name) + "/" +
           s(ObjectiveT::weighting_type::name) + " conditioning=" + s(ConditioningT::name) +
           " backbone=" + s(BackboneT::name) + " autoencoder=" + s(AutoencoderT::name) + " sampler=" + SamplerT{}.name();
  }
};

using SD3Objective = training::Objective<process::RectifiedFlow, timesteps::LogitNormal, weighting::Uniform>;
using EulerWithShift = sampling::ScheduledSampler<sampling::Euler, sampling::ShiftedLinear>;

// SD3's recipe (paper section 5.3): rectified flow with logit-normal(0, 1) timesteps, MM-DiT with
// QK-RMSNorm, the 16-channel KL autoencoder with SD3's latent format, Euler with shift.
using SD3Recipe = Pipeline<SD3Objective, encoders::CaptionConditioning, backbone::MMDiTBackbone<backbone::QKNorm::RMS>,
                           autoencoder::FrozenKL<autoencoder::SD3LatentFormat>, EulerWithShift>;

// The same recipe on pixels: the shapes world's default model (32 x 32 images).
using SD3PixelRecipe = Pipeline<SD3Objective, encoders::CaptionConditioning, backbone::MMDiTBackbone<backbone::QKNorm::RMS>,
                                autoencoder::PixelSpace, EulerWithShift>;

// SD3's recipe with its released frozen encoders: CLIP-L, OpenCLIP bigG and T5-XXL (text_stack in the
// train config) and the 16-channel KL autoencoder (autoencoder_weights), a new MM-DiT trained on them.
using SD3TextStackRecipe = Pipeline<SD3Objective, encoders::SD3TextConditioning, backbone::MMDiTBackbone<backbone::QKNorm::RMS>,
                                    autoencoder::FrozenKL<autoencoder::SD3LatentFormat>, EulerWithShift>;

}  // namespace diffuse::pipeline
