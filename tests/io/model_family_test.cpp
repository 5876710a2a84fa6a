// Recognising checkpoints from key names and shapes (the rules of docs/checkpoints.md).
#include <catch2/catch.hpp>

#include "diffuse/io/model_family.hpp"

namespace t_model_family {

using namespace diffuse::io;

struct Keys {
  std::vector<TensorInfo> tensors;
  Keys& add(const std::string& name, std::vector<std::int64_t> shape) {
    TensorInfo t;
    t.name = name;
    t.shape = std::move(shape);
    tensors.push_back(t);
    return *this;
  }
};

// The keys the detector reads, with the released models' shapes (SD3_FACTS table (b)).
void add_mmdit(Keys& k, const std::string& p, std::int64_t depth, std::int64_t pos, bool qk, int x_attn) {
  const std::int64_t h = 64 * depth;
  k.add(p + "x_embedder.proj.weight", {h, 16, 2, 2}).add(p + "pos_embed", {1, pos, h});
  k.add(p + "y_embedder.mlp.0.weight", {h, 2048}).add(p + "context_embedder.weight", {h, 4096});
  k.add(p + "final_layer.linear.weight", {64, h});
  for (std::int64_t i = 0; i < depth; ++i) {
    const auto b = p + "joint_blocks." + std::to_string(i) + ".";
    k.add(b + "x_block.attn.qkv.weight", {3 * h, h}).add(b + "context_block.attn.qkv.weight", {3 * h, h});
    if (qk) k.add(b + "context_block.attn.ln_k.weight", {64});
    if (i < x_attn) k.add(b + "x_block.attn2.qkv.weight", {3 * h, h}).add(b + "x_block.attn2.ln_k.weight", {64});
  }
}

const Component& only(const std::vector<Component>& cs) {
  REQUIRE(cs.size() == 1);
  return cs[0];
}

TEST_CASE("MM-DiT families are told apart by depth, pos_embed and MMDiT-X layers", "[io][detect]") {
  Keys m, m35, l;
  add_mmdit(m, "model.diffusion_model.", 24, 36864, false, 0);
  add_mmdit(m35, "", 24, 147456, true, 13);
  add_mmdit(l, "model.diffusion_model.", 38, 36864, true, 0);
  const auto cm = only(detect_components(m.tensors));
  CHECK(cm.family == "SD3-medium");
  CHECK(cm.prefix == "model.diffusion_model.");
  CHECK(cm.sizes.at("depth") == 24);
  CHECK(cm.sizes.at("pos_embed_max_size") == 192);
  const auto c35 = only(detect_components(m35.tensors));
  CHECK(c35.family == "SD3.5-medium");
  CHECK(c35.sizes.at("x_self_attn_layers") == 13);
  CHECK(c35.prefix.empty());
  CHECK(only(detect_components(l.tensors)).family == "SD3.5-large");

  Keys small;
  add_mmdit(small, "", 2, 64, false, 0);
  const auto cs = only(detect_components(small.tensors));
  CHECK(cs.family == "custom");
  CHECK(cs.sizes.at("hidden") == 128);
}

TEST_CASE("the diffusers MM-DiT layout is recognised", "[io][detect]") {
  Keys k;
  k.add("pos_embed.proj.weight", {1536, 16, 2, 2}).add("pos_embed.pos_embed", {1, 36864, 1536});
  k.add("time_text_embed.text_embedder.linear_1.weight", {1536, 2048}).add("context_embedder.weight", {1536, 4096});
  for (int i = 0; i < 24; ++i) k.add("transformer_blocks." + std::to_string(i) + ".attn.to_q.weight", {1536, 1536});
  const auto c = only(detect_components(k.tensors));
  CHECK(c.layout == KeyLayout::Diffusers);
  CHECK(c.family == "SD3-medium");
}

TEST_CASE("an all-in-one SD3 checkpoint yields every component with its prefix", "[io][detect]") {
  Keys k;
  add_mmdit(k, "model.diffusion_model.", 24, 36864, false, 0);
  const std::string v = "first_stage_model.";
  k.add(v + "encoder.conv_in.weight", {128, 3, 3, 3}).add(v + "decoder.conv_in.weight", {512, 16, 3, 3});
  k.add(v + "decoder.mid.attn_1.q.weight", {512, 512, 1, 1});
  for (int i = 0; i < 4; ++i) k.add(v + "decoder.up." + std::to_string(i) + ".block.0.conv1.weight", {1, 1, 3, 3});
  auto clip = [&](const std::string& p, std::int64_t w, int layers) {
    k.add(p + "text_model.embeddings.token_embedding.weight", {49408, w});
    k.add(p + "text_model.embeddings.position_embedding.weight", {77, w});
    for (int i = 0; i < layers; ++i) k.add(p + "text_model.encoder.layers." + std::to_string(i) + ".mlp.fc1.weight", {4 * w, w});
  };
  clip("text_encoders.clip_l.transformer.", 768, 12);
  clip("text_encoders.clip_g.transformer.", 1280, 32);
  k.add("text_encoders.clip_g.transformer.text_projection.weight", {1280, 1280});
  const std::string t = "text_encoders.t5xxl.transformer.";
  for (int i = 0; i < 24; ++i) k.add(t + "encoder.block." + std::to_string(i) + ".layer.0.SelfAttention.q.weight", {4096, 4096});
  k.add(t + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", {10240, 4096});

  const auto cs = detect_components(k.tensors);
  REQUIRE(cs.size() == 5);
  std::map<std::string, std::string> by_family;
  for (const auto& c : cs) by_family[c.family] = c.prefix;
  CHECK(by_family.at("SD3-medium") == "model.diffusion_model.");
  CHECK(by_family.at("SD3 VAE") == "first_stage_model.");
  CHECK(by_family.at("CLIP-L") == "text_encoders.clip_l.transformer.");
  CHECK(by_family.at("CLIP-G (OpenCLIP bigG)") == "text_encoders.clip_g.transformer.");
  CHECK(by_family.at("T5-XXL") == "text_encoders.t5xxl.transformer.");
}

TEST_CASE("files without model keys yield no component", "[io][detect]") {
  Keys k;
  k.add("x", {2, 16, 8, 8}).add("joint_blocks.0.x_block.attn.qkv.weight", {3, 3});
  CHECK(detect_components(k.tensors).empty());
}

}  // namespace t_model_family
