// `diffuse tokenize`, `diffuse encode-text` and `diffuse forward` on text encoders, end to end.
// The parity cases read ../shared/testdata/tokenizers/clip_bpe_cases.json, t5_spm_cases.json and
// ../shared/testdata/sd3ref/clip_b.*, t5_a.* (with DIFFUSE_PARITY_TESTS).
#include <catch2/catch.hpp>

#include <sstream>

#include <torch/torch.h>

#include "diffuse/io/safetensors.hpp"
#include "encoders/tiny_text_stack.hpp"
#include "test_util.hpp"

namespace t_cli_text {

using namespace diffuse;
using Catch::Matchers::Contains;

std::vector<std::int64_t> parse_ids(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::int64_t> ids;
  for (std::int64_t v; in >> v;) ids.push_back(v);
  return ids;
}

TEST_CASE("diffuse tokenize: ids, pieces, SD3 chunks; bad input exits 2", "[cli][text]") {
  test::TinyStack s;
  const auto tok = (s.dir / "tok").string();
  auto r = test::run_cli("tokenize --tokenizer clip --vocab " + tok + " --prompt 'Dog cat'");
  REQUIRE(r.exit_code == 0);
  CHECK(parse_ids(r.out) == std::vector<std::int64_t>{3, 14, 32, 2, 0, 45});
  r = test::run_cli("tokenize --tokenizer clip --vocab " + tok + " --prompt 'abc' --pieces");
  CHECK(r.out == "ab c</w>\n");  // 'a b' merges; 'ab c</w>' does not
  r = test::run_cli("tokenize --tokenizer clip --vocab " + tok + " --prompt '(a:1.5) b' --sd3");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("clip_l chunk 0 (encoded by SD3): 58 26 27 59 59") && Contains("clip_g chunk 0 (encoded by SD3): 58 26 27 59 0 0") &&
                        Contains("weights: 1 1.5 1 1"));
  r = test::run_cli("tokenize --tokenizer t5 --vocab " + tok + " --prompt 'a red circle' --sd3");
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("t5: ") && Contains(" 1 0 0"));
  r = test::run_cli("tokenize --tokenizer bert --vocab " + tok + " --prompt x");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("clip or t5"));
  r = test::run_cli("tokenize --tokenizer clip --vocab " + (s.dir / "missing.gz").string() + " --prompt x");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("missing.gz") && Contains("openai/CLIP"));
  CHECK(test::run_cli("tokenize --help").exit_code == 0);
}

TEST_CASE("diffuse encode-text writes SD3's context and pooled; --no-t5 leaves zeros", "[cli][text]") {
  test::TinyStack s;
  const auto all = (s.dir / "all.safetensors").string(), tok = (s.dir / "tok").string();
  const auto out = (s.dir / "cond.safetensors").string();
  auto r = test::run_cli("encode-text --model " + all + " --tokenizers " + tok + " --prompt 'a red circle' --prompt '' --out " + out);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto f = io::load_safetensors(out);
  const auto want = encoders::SD3TextConditioning::load(s.all_in_one()).encode({"a red circle", ""});
  // The CLI runs with tuned BLAS kernels (runtime_tuning.hpp): equal up to float32 rounding.
  CHECK(torch::allclose(f["context"], want.context, 1e-4, 1e-5));
  CHECK(torch::allclose(f["pooled"], want.pooled, 1e-4, 1e-5));
  r = test::run_cli("encode-text --model " + all + " --tokenizers " + tok + " --prompt 'a red circle' --no-t5 --out " + out);
  REQUIRE(r.exit_code == 0);
  const auto g = io::load_safetensors(out);
  CHECK(g["context"].size(2) == 4096);  // without T5 the SD3 widths apply
  CHECK(g["context"].narrow(1, 77, 77).abs().max().item<float>() == 0.f);
  r = test::run_cli("encode-text --clip-l " + all + " --prompt x --out " + out);  // no tokenizers
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("no CLIP tokenizer") && Contains("--tokenizers"));
  r = test::run_cli("encode-text --prompt x --out " + out);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("no text encoder given"));
}

TEST_CASE("diffuse forward picks a text encoder out of an all-in-one file with --component", "[cli][text]") {
  test::TinyStack s;
  const auto all = (s.dir / "all.safetensors").string();
  io::save_safetensors(s.dir / "in.safetensors", {{"tokens", torch::tensor({{58, 3, 4, 59, 59}}, torch::kLong)}});
  const auto out = (s.dir / "out.safetensors").string();
  auto r = test::run_cli("forward --weights " + all + " --component clip_g --inputs " + (s.dir / "in.safetensors").string() +
                         " --out " + out);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto f = io::load_safetensors(out);
  torch::NoGradGuard g;
  const auto ref = s.g->forward(torch::tensor({{58, 3, 4, 59, 59}}, torch::kLong));
  CHECK(torch::allclose(f["pooled_projected"], ref.pooled_projected, 1e-4, 1e-5));  // GELU: bigG's, from the prefix
  CHECK(torch::allclose(f["hidden_layer1"], ref.layers[1], 1e-4, 1e-5));
  r = test::run_cli("forward --weights " + all + " --inputs " + (s.dir / "in.safetensors").string() + " --out " + out);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Contains("--component"));
}

#ifdef DIFFUSE_TESTDATA_DIR
// Reads ../shared/testdata/sd3ref/clip_b.* and t5_a.*: the CLI reproduces the stored outputs.
TEST_CASE("parity through the CLI: diffuse forward on clip_b and t5_a", "[cli][text][parity]") {
  const std::string d = std::string(DIFFUSE_TESTDATA_DIR) + "/sd3ref/";
  test::TempDir tmp;
  for (const std::string name : {"clip_b", "t5_a"}) {
    const auto out = (tmp / (name + ".safetensors")).string();
    const auto r = test::run_cli("forward --weights " + d + name + ".weights.safetensors --config " + d + name +
                                 ".json --inputs " + d + name + ".io.safetensors --out " + out);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const auto ours = io::load_safetensors(out), ref = io::load_safetensors(d + name + ".io.safetensors");
    std::vector<std::string> keys{"last_hidden"};
    if (name == "clip_b") keys.insert(keys.end(), {"penultimate_hidden", "pooled", "pooled_projected"});
    else keys.insert(keys.end(), {"hidden_layer1", "hidden_layer1_ln", "long_last_hidden"});
    for (const auto& k : keys) {
      INFO(name << " " << k);
      const double scale = std::max(1.0, ref[k].abs().max().item<double>());
      CHECK((ours[k] - ref[k]).abs().max().item<double>() / scale <= 2e-5);
    }
  }
}

// Reads ../shared/testdata/tokenizers/clip_bpe_cases.json (first chunk of a long prompt).
TEST_CASE("parity through the CLI: diffuse tokenize --sd3 on a long prompt", "[cli][text][parity]") {
  const std::string d = std::string(DIFFUSE_TESTDATA_DIR) + "/tokenizers/";
  std::ifstream in(d + "clip_bpe_cases.json");
  const auto cases = nlohmann::json::parse(in)["cases"];
  const auto& c = cases[24];  // the long cinematic prompt: 86 tokens, two chunks
  const std::string prompt = c["prompt"];
  REQUIRE(prompt.find('\'') == std::string::npos);
  const auto r = test::run_cli("tokenize --tokenizer clip --vocab " + d + "bpe_simple_vocab_16e6.txt.gz --sd3 --prompt '" + prompt + "'");
  REQUIRE(r.exit_code == 0);
  const auto line = r.out.substr(0, r.out.find('\n'));
  CHECK(parse_ids(line.substr(line.find(": ") + 2)) == c["sd3_clip_l_chunks"][0].get<std::vector<std::int64_t>>());
  CHECK_THAT(r.out, Contains("clip_l chunk 1 (not encoded by SD3)"));
}
#endif

}  // namespace t_cli_text
