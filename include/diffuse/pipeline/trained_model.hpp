#pragma once
// A model trained by training::Trainer, loaded for generation: the config, the conditioning
// encoder, the autoencoder and the EMA weights of the current checkpoint (or a given weights file,
// e.g. a snapshot). Load once, generate many.
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/hash.hpp"
#include "diffuse/io/lora_file.hpp"
#include "diffuse/pipeline/generate.hpp"
#include "diffuse/training/trainer.hpp"

namespace diffuse::pipeline {

template <class P>
class TrainedModel {
 public:
  using Module = typename P::backbone_type::module_type;
  // `weights`: empty for the EMA of the checkpoint named by state.json.
  explicit TrainedModel(const std::filesystem::path& dir, const std::filesystem::path& weights = {})
      : dir_(dir),
        config_(load_checked_config(dir)),
        cond_(training::open_conditioning<typename P::conditioning_type>(dir, config_)),
        ae_(config_.autoencoder_weights),
        model_(nullptr) {
    std::filesystem::path w = weights;
    if (w.empty()) {
      std::ifstream in(dir / "state.json");
      const auto st = nlohmann::json::parse(in, nullptr, false);
      if (st.is_discarded() || !st.contains("checkpoint"))
        throw InputError((dir / "state.json").string() + ": missing or not a training state (is this a `diffuse train --out` folder?)");
      w = dir / st["checkpoint"].get<std::string>() / "ema.safetensors";
      step_ = st.value("step", 0);
    }
    if (!std::filesystem::is_regular_file(w)) throw InputError(w.string() + ": weights file not found");
    if (!weights.empty()) {  // a snapshot or checkpoint file records the step it was taken at
      io::SafetensorsFile f(w.string());
      if (const auto it = f.metadata().find("diffuse.step"); it != f.metadata().end()) step_ = std::stoi(it->second);
    }
    if (!config_.objective.empty()) objective_ = training::objective_from_spec<typename P::objective_type>(config_.objective);
    model_ = Module(P::backbone_type::configure(config_.model));
    training::trainer_detail::load_into(*model_, w);
    model_->eval();
    hash_ = Fingerprint().add_file(w).hex();
    weights_ = w;
  }

  const training::TrainConfig& config() const { return config_; }
  const std::string& model_hash() const { return hash_; }
  const std::filesystem::path& weights() const { return weights_; }
  int step() const { return step_; }
  Module& backbone() { return model_; }

  // Merges a LoRA file (io/lora_file.hpp, either layout) into the weights at `strength`; the
  // model hash then covers it too.
  void add_lora(const std::filesystem::path& file, double strength) {
    io::merge_lora(model_, io::read_lora(file.string(), model_->config()), strength);
    hash_ = Fingerprint().add(hash_).add_file(file).add(std::to_string(strength)).hex();
  }

  // What the LoRA fine-tuner (training/lora_trainer.hpp) needs of a base model.
  encoders::TextFeatures encode_text(const std::vector<std::string>& texts) const { return cond_.encode(texts); }
  torch::Tensor encode_images(const torch::Tensor& images) const { return ae_.encode(images); }
  void apply_dropout(torch::Tensor& context, torch::Tensor& pooled, double rate, at::Generator& gen) const
    requires requires(const typename P::conditioning_type& c, torch::Tensor& t, at::Generator& g) { c.apply_dropout(t, t, 0.0, g); }
  {
    cond_.apply_dropout(context, pooled, rate, gen);
  }
  int pixel_multiple() const { return ae_.factor() * static_cast<int>(config_.model.patch); }
  int native_resolution() const { return config_.image_size; }
  double training_shift() const { return config_.timestep_shift; }

  // Images (B, 3, H, W) in [-1, 1]; `shift` <= 0 keeps the trained model's sampling shift.
  torch::Tensor generate(const std::vector<std::string>& prompts, GenerateOptions o, double shift = 0) {
    typename P::sampler_type sampler{};
    if constexpr (requires { sampler.schedule.shift; }) sampler.schedule.shift = shift > 0 ? shift : config_.sample_shift;
    if (o.height <= 0) o.height = config_.image_size;
    if (o.width <= 0) o.width = config_.image_size;
    return pipeline::generate<P>(model_, cond_, ae_, sampler, objective_, prompts, o);
  }

 private:
  static training::TrainConfig load_checked_config(const std::filesystem::path& dir) {
    if (!std::filesystem::is_regular_file(dir / "config.json"))
      throw InputError((dir / "config.json").string() + ": not found (is this a `diffuse train --out` folder?)");
    return load_config<training::TrainConfig>(dir / "config.json", training::TrainConfig::shapes_default());
  }
  std::filesystem::path dir_, weights_;
  training::TrainConfig config_;
  typename P::conditioning_type cond_;
  typename P::autoencoder_type ae_;
  typename P::objective_type objective_{};
  Module model_;
  std::string hash_;
  int step_ = 0;
};

}  // namespace diffuse::pipeline
