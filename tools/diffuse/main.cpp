// `diffuse`: the command-line door to the library. Exit codes: 0 success, 1 failure, 2 bad input.
#include <exception>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "command.hpp"
#include "diffuse/core/cpu_features.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/runtime_tuning.hpp"
#include "diffuse/version.hpp"

int main(int argc, char** argv) {
  try {
    diffuse::cpu_kernels_generic();  // a bad DIFFUSE_CPU_KERNELS is bad input, said once, up front
  } catch (const diffuse::InputError& e) {
    std::cerr << "diffuse: error: " << e.what() << "\n";
    return 2;
  }
  // Compute-heavy commands re-execute once with the OpenMP wait policy and OpenBLAS kernels set
  // (docs/performance.md); quick ones do not pay a second start.
  if (argc > 1) {
    const std::string cmd = argv[1];
    if (cmd == "forward" || cmd == "denoise" || cmd == "vae" || cmd == "train" || cmd == "sample" || cmd == "eval" || cmd == "generate" || cmd == "encode-text")
      diffuse::tune_runtime(argv);
  }
  CLI::App app{"diffuse: Stable Diffusion 3 components in C++ (training, sampling, checkpoints)", "diffuse"};
  app.set_version_flag("--version", std::string("diffuse ") + DIFFUSE_VERSION_STRING);
  app.require_subcommand(1);
  diffuse::cli::add_inspect(app);
  diffuse::cli::add_timesteps(app);
  diffuse::cli::add_forward(app);
  diffuse::cli::add_denoise(app);
  diffuse::cli::add_shapes(app);
  diffuse::cli::add_vae(app);
  diffuse::cli::add_train(app);
  diffuse::cli::add_text(app);
  diffuse::cli::add_generate(app);
  diffuse::cli::add_dpo(app);
  diffuse::cli::add_launch(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message and usage hint
    return 2;
  } catch (const diffuse::InputError& e) {
    std::cerr << "diffuse: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "diffuse: failed: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
