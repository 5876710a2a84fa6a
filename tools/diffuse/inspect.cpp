// `diffuse inspect FILE.safetensors`: tensors, parameter count, metadata and the recognised model
// components of a checkpoint, as text or JSON. Reads only the header (the file is memory-mapped).
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "command.hpp"
#include "diffuse/core/format.hpp"
#include "diffuse/io/model_family.hpp"
#include "diffuse/io/png.hpp"
#include "diffuse/io/safetensors_file.hpp"
#include "diffuse/pipeline/generation_parameters.hpp"

namespace diffuse::cli {
namespace {

std::string human(double v, const char* const* units, int n, double base) {
  int u = 0;
  while (v >= base && u < n - 1) {
    v /= base;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f%s" : "%.2f%s", v, units[u]);
  return buf;
}

nlohmann::ordered_json component_json(const io::Component& c) {
  nlohmann::ordered_json j;
  j["kind"] = io::to_string(c.kind);
  j["family"] = c.family;
  j["layout"] = io::to_string(c.layout);
  j["prefix"] = c.prefix;
  j["tensors"] = c.tensor_count;
  j["sizes"] = c.sizes;
  return j;
}

// A PNG: its text chunks; the "parameters" chunk (A1111 / stable-diffusion.cpp form) parsed.
void inspect_png(const std::string& path, bool as_json) {
  const auto chunks = io::read_png_text(path);
  const auto img = io::read_png(path);
  nlohmann::ordered_json j;
  j["file"] = path;
  j["width"] = img.shape(1);
  j["height"] = img.shape(0);
  j["text"] = nlohmann::ordered_json::object();
  for (const auto& [k, v] : chunks) j["text"][k] = v;
  for (const auto& [k, v] : chunks)
    if (k == "parameters") j["parameters"] = pipeline::parse_parameters_text(v);
  if (as_json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::cout << "file:        " << path << "\nimage:       " << img.shape(1) << "x" << img.shape(0) << "\n";
  if (j.contains("parameters")) {
    std::cout << "parameters:\n";
    for (const auto& [k, v] : j["parameters"].items()) std::cout << "  " << k << ": " << v.get<std::string>() << "\n";
  }
  for (const auto& [k, v] : chunks)
    if (k != "parameters") std::cout << "text " << k << ": " << v << "\n";
  if (chunks.empty()) std::cout << "(no text chunks)\n";
}

void run_inspect(const std::string& path, bool as_json, bool summary) {
  if (path.size() > 4 && path.substr(path.size() - 4) == ".png") return inspect_png(path, as_json);
  io::SafetensorsFile file(path);
  const auto& tensors = file.tensors();
  std::uint64_t params = 0, bytes = 0;
  std::map<std::string, std::size_t> dtype_counts;
  for (const auto& t : tensors) {
    params += static_cast<std::uint64_t>(t.numel());
    bytes += t.nbytes();
    ++dtype_counts[std::string(io::dtype_name(t.dtype))];
  }
  const auto components = io::detect_components(tensors);

  if (as_json) {
    nlohmann::ordered_json j;
    j["file"] = path;
    j["file_bytes"] = file.mapping()->size();
    j["tensor_count"] = tensors.size();
    j["parameters"] = params;
    j["data_bytes"] = bytes;
    j["dtypes"] = dtype_counts;
    j["metadata"] = file.metadata();
    j["components"] = nlohmann::ordered_json::array();
    for (const auto& c : components) j["components"].push_back(component_json(c));
    if (!summary) {
      j["tensors"] = nlohmann::ordered_json::array();
      for (const auto& t : tensors)
        j["tensors"].push_back({{"name", t.name}, {"dtype", io::dtype_name(t.dtype)}, {"shape", t.shape}});
    }
    std::cout << j.dump(2) << "\n";
    return;
  }

  static const char* const count_units[] = {"", " K", " M", " B", " T"};
  static const char* const byte_units[] = {" B", " KB", " MB", " GB", " TB"};
  std::cout << "file:        " << path << "\n";
  std::cout << "tensors:     " << tensors.size() << "\n";
  std::cout << "parameters:  " << params << " (" << human(double(params), count_units, 5, 1000) << ")\n";
  std::cout << "data:        " << bytes << " bytes (" << human(double(bytes), byte_units, 5, 1000) << ")\n";
  std::cout << "dtypes:     ";
  for (const auto& [d, n] : dtype_counts) std::cout << " " << d << " x" << n;
  std::cout << "\n";
  std::cout << "metadata:    " << (file.metadata().empty() ? "(none)" : "") << "\n";
  for (const auto& [k, v] : file.metadata()) std::cout << "  " << k << ": " << v << "\n";
  std::cout << "components:  " << (components.empty() ? "(no known model recognised)" : "") << "\n";
  for (const auto& c : components) {
    std::cout << "  " << io::to_string(c.kind) << ": " << c.family << " (" << io::to_string(c.layout)
              << " layout, prefix \"" << c.prefix << "\", " << c.tensor_count << " tensors)";
    for (const auto& [k, v] : c.sizes) std::cout << " " << k << "=" << v;
    std::cout << "\n";
  }
  if (summary) return;
  std::size_t w = 4;
  for (const auto& t : tensors) w = std::max(w, t.name.size());
  std::cout << "\n";
  for (const auto& t : tensors) {
    std::cout << t.name << std::string(w + 2 - t.name.size(), ' ') << io::dtype_name(t.dtype)
              << std::string(6 - io::dtype_name(t.dtype).size(), ' ') << format_shape(t.shape) << "\n";
  }
}

}  // namespace

void add_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "List a safetensors checkpoint's tensors, size, metadata and model family, or a PNG's generation parameters");
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  auto summary = std::make_shared<bool>(false);
  cmd->add_option("file", *path, "a .safetensors file, or a .png written by diffuse generate / sample")->required();
  cmd->add_flag("--json", *as_json, "print JSON instead of text");
  cmd->add_flag("--summary", *summary, "omit the per-tensor listing");
  cmd->callback([=] { run_inspect(*path, *as_json, *summary); });
}

}  // namespace diffuse::cli
