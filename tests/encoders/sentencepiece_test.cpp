// SentencePiece through the shim module, inside a process that also runs libtorch (the
// combination that crashes when sentencepiece is linked directly; docs/dependencies.md).
#include <catch2/catch.hpp>

#include <fstream>

#include <torch/torch.h>

#include "diffuse/encoders/sentencepiece.hpp"
#include "test_util.hpp"

namespace t_sentencepiece {

using namespace diffuse;
using Catch::Matchers::Contains;

TEST_CASE("a SentencePiece model trains, encodes and decodes next to libtorch", "[encoders][sentencepiece]") {
  const auto x = torch::ones({2, 2}).sum();  // libtorch is live in this process
  CHECK(x.item<float>() == 4.f);

  test::TempDir dir;
  {
    std::ofstream text(dir / "captions.txt");
    const char* colours[] = {"red", "green", "blue", "yellow", "purple", "orange"};
    const char* shapes[] = {"circle", "square", "triangle"};
    for (int i = 0; i < 600; ++i)
      text << "a " << colours[i % 6] << " " << shapes[(i / 6) % 3] << " left of a " << colours[(i / 18) % 6] << " "
           << shapes[(i / 3) % 3] << "\n";
  }
  auto lib = encoders::SentencePieceLibrary::shared();
  lib->train("--input=" + (dir / "captions.txt").string() + " --model_prefix=" + (dir / "spm").string() +
             " --vocab_size=30 --model_type=unigram --minloglevel=2");
  encoders::SentencePieceProcessor sp(dir / "spm.model", lib);
  CHECK(sp.vocab_size() == 30);
  const auto ids = sp.encode("a blue triangle left of a red circle");
  CHECK(!ids.empty());
  for (int id : ids) {
    CHECK(id >= 0);
    CHECK(id < 30);
  }
  CHECK(sp.decode(ids) == "a blue triangle left of a red circle");
  CHECK(sp.eos_id() >= 0);

  CHECK_THROWS_WITH(encoders::SentencePieceProcessor(dir / "absent.model", lib), Contains("absent.model"));
  CHECK_THROWS_WITH(lib->train("--input=" + (dir / "none.txt").string() + " --model_prefix=x --vocab_size=10"),
                    Contains("sentencepiece training"));
}

TEST_CASE("a missing shim is a clear error", "[encoders][sentencepiece]") {
  CHECK_THROWS_WITH(encoders::SentencePieceLibrary("/nonexistent/libdiffuse_sentencepiece.so"),
                    Contains("cannot load shim"));
}

}  // namespace t_sentencepiece
