// Uses the installed package: the umbrella header, safetensors I/O with torch, and the
// sentencepiece shim at the path the package config compiled in.
#include <cstdio>
#include <filesystem>
#include <string>

#include <diffuse/diffuse.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer INSTALL_PREFIX\n");
    return 2;
  }
  const std::string prefix = argv[1];
  const auto file = std::filesystem::path(prefix) / "consumer_check.safetensors";
  const auto x = torch::arange(6, torch::kFloat32).reshape({2, 3});
  diffuse::io::save_safetensors(file, {{"x", x}});
  const auto back = diffuse::io::load_safetensors(file.string());
  if (!torch::equal(back["x"], x)) {
    std::fprintf(stderr, "consumer: round trip differs\n");
    return 1;
  }
  diffuse::encoders::SentencePieceLibrary spm;
  if (spm.path().rfind(prefix, 0) != 0) {
    std::fprintf(stderr, "consumer: shim %s is not the installed one\n", spm.path().c_str());
    return 1;
  }
  std::printf("consumer ok: diffuse %s, shim %s\n", DIFFUSE_VERSION_STRING, spm.path().c_str());
  return 0;
}
