// CLIP BPE and T5 tokenizers: text clean-up, pre-split, merges, SD3 chunking and weights, errors;
// with DIFFUSE_PARITY_TESTS the ids of every prompt in
// ../shared/testdata/tokenizers/clip_bpe_cases.json and t5_spm_cases.json.
#include <catch2/catch.hpp>

#include <zlib.h>

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/encoders/clip_tokenizer.hpp"
#include "diffuse/encoders/prompt_weights.hpp"
#include "diffuse/encoders/t5_tokenizer.hpp"
#include "test_util.hpp"

namespace t_tokenizers {

using namespace diffuse;
using namespace diffuse::encoders;
using Catch::Matchers::Contains;

std::string clean(const std::string& s) { return text::u32_to_utf8(text::clip_clean(s)); }

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  for (const auto& p : ClipTokenizer::pre_split(text::clip_clean(s))) out.push_back(text::u32_to_utf8(p));
  return out;
}

TEST_CASE("CLIP text clean-up follows ftfy, html.unescape, whitespace collapse and str.lower", "[encoders][tokenizer]") {
  CHECK(clean("  A   Photo\tOf\nA CAT  ") == "a photo of a cat");
  CHECK(clean("curly \u201cquotes\u201d and \u2018it\u2019s\u2019") == "curly \"quotes\" and 'it's'");
  CHECK(clean("\ufb01ne \ufb02ow") == "fine flow");                        // ligatures
  CHECK(clean("\uff21\uff22\uff23\uff11\uff12\u3000x") == "abc12 x");      // full-width forms, ideographic space
  CHECK(clean("cafe\u0301") == "caf\u00e9");                               // NFC joins the combining accent
  CHECK(clean("\u0395\u039b\u039b\u0391\u03a3") == "\u03b5\u03bb\u03bb\u03b1\u03c2");  // final sigma, as Python
  CHECK(clean("a &amp; b &#233; &#x41;") == "a & b \u00e9 a");
  CHECK(clean("x\u200dy") == "x\u200dy");                                  // joiners stay (emoji sequences)
  CHECK(clean("a\x01" "b") == "ab");                                       // control characters go
  CHECK(clean("\u2014 \u2026") == "\u2014 \u2026");                        // dashes and ellipses stay
}

TEST_CASE("CLIP pre-split: contractions, letters, one digit per piece, punctuation runs", "[encoders][tokenizer]") {
  CHECK(split("it's a dog's life, isn't it") ==
        std::vector<std::string>{"it", "'s", "a", "dog", "'s", "life", ",", "isn", "'t", "it"});
  CHECK(split("2024: x\u00b2!!?") == std::vector<std::string>{"2", "0", "2", "4", ":", "x", "\u00b2", "!!?"});
  CHECK(split("<|startoftext|>hi<|endoftext|>") == std::vector<std::string>{"<|startoftext|>", "hi", "<|endoftext|>"});
  CHECK(split("\u65e5\u672c\u3001\u6771") == std::vector<std::string>{"\u65e5\u672c", "\u3001", "\u6771"});
  CHECK(split("") .empty());
}

TEST_CASE("the prompt-weight syntax gives SD3's reference weights", "[encoders][tokenizer]") {
  const auto w = parse_prompt_weights("(masterpiece:1.2), best, ((very)) (x:bad) \\(kept\\)");
  REQUIRE(w.size() == 6);
  CHECK(w[0].text == "masterpiece");
  CHECK(w[0].weight == Approx(1.2));
  CHECK(w[1].text == ", best, ");
  CHECK(w[2].text == "very");
  CHECK(w[2].weight == Approx(1.21));
  CHECK(w[4].text == "x:bad");  // not a number: the colon stays text, weight x1.1
  CHECK(w[4].weight == Approx(1.1));
  CHECK(w[5].text == " (kept)");
  CHECK(w[5].weight == 1.0);
  const auto words = weighted_words("a\nb  (c d:0.5)");
  REQUIRE(words.size() == 4);
  CHECK(words[0].first == "a");
  CHECK(words[1].first == "b");
  CHECK(words[3].first == "d");
  CHECK(words[3].second == Approx(0.5));
  // Unbalanced parentheses do not throw: a stray ')' leaves the depth negative, so the rest stays text.
  const auto odd = parse_prompt_weights("a) b (c");
  REQUIRE(odd.size() == 1);
  CHECK(odd[0].text == "a) b (c");
}

// A small tokenizer in the diffusers file form: lower-case letters, their word-final forms, a few
// merges, and the special tokens.
struct TinyVocab {
  test::TempDir dir;
  TinyVocab() {
    nlohmann::json v;
    int id = 0;
    for (char c = 'a'; c <= 'z'; ++c) v[std::string(1, c)] = id++;
    for (char c = 'a'; c <= 'z'; ++c) v[std::string(1, c) + "</w>"] = id++;
    for (const char* m : {"ca", "cat</w>", "at</w>", "ts</w>", "cats</w>"}) v[m] = id++;
    v["<|startoftext|>"] = id++;
    v["<|endoftext|>"] = id++;
    std::ofstream(dir / "vocab.json") << v.dump();
    std::ofstream(dir / "merges.txt") << "#version: 0.2\nc a\nca t</w>\na t</w>\nt s</w>\ncat s</w>\n";
  }
};

TEST_CASE("byte-level BPE applies merges by rank, in both file forms' ids", "[encoders][tokenizer]") {
  TinyVocab v;
  const ClipTokenizer tok(v.dir.path());
  CHECK(tok.bos_id() == 57);
  CHECK(tok.eos_id() == 58);
  CHECK(tok.encode("cat") == std::vector<std::int64_t>{53});                 // c a -> ca, ca t</w> -> cat</w>
  CHECK(tok.encode("at") == std::vector<std::int64_t>{54});
  // c a -> ca first (rank 0); then t s</w> (rank 3); "cat s</w>" never applies since no "cat" forms.
  CHECK(tok.encode("cats") == std::vector<std::int64_t>{52, 55});
  CHECK(tok.encode_pieces("cats") == std::vector<std::string>{"ca", "ts</w>"});
  CHECK(tok.encode("Dog") == std::vector<std::int64_t>{3, 14, 26 + 6});
  const auto padded = tok.encode_padded("cat", 0, 5);
  CHECK(padded == std::vector<std::int64_t>{57, 53, 58, 0, 0});
  CHECK(tok.encode_padded("a b c d e f", 58, 4) == std::vector<std::int64_t>{57, 26, 27, 58});  // cut, EOS kept
  // The vocabulary lacks digits: a token the vocabulary cannot express is an error, not a wrong id.
  CHECK_THROWS_WITH(tok.encode("7"), Contains("vocabulary lacks"));
}

TEST_CASE("SD3 chunking: 75 tokens per chunk, long words split, short words move whole", "[encoders][tokenizer]") {
  TinyVocab v;
  const ClipTokenizer tok(v.dir.path());
  // 74 one-token words, then a 3-token word: it does not fit the 1 slot left and moves whole.
  std::string prompt;
  for (int i = 0; i < 74; ++i) prompt += "a ";
  prompt += "bcd";
  auto chunks = tok.sd3_chunks(prompt, 0);
  REQUIRE(chunks.size() == 2);
  CHECK(chunks[0].ids.size() == 77);
  CHECK(chunks[0].ids[0] == 57);
  CHECK(chunks[0].ids[74] == 26);  // the last 'a'
  CHECK(chunks[0].ids[75] == 58);  // EOS, then padding
  CHECK(chunks[0].ids[76] == 0);
  CHECK(chunks[1].ids[1] == 1);    // b c d</w> start the second chunk
  CHECK(chunks[1].ids[3] == 26 + 3);
  CHECK(chunks[1].ids[4] == 58);
  // A 10-token word (>= 8) fills the chunk and continues in the next.
  prompt.clear();
  for (int i = 0; i < 70; ++i) prompt += "a ";
  prompt += "(bcdefghijk:2)";
  chunks = tok.sd3_chunks(prompt, 58);
  REQUIRE(chunks.size() == 2);
  CHECK(chunks[0].ids[71] == 1);  // b
  CHECK(chunks[0].ids[75] == 5);  // f: 5 tokens fit
  CHECK(chunks[0].weights[75] == 2.0);
  CHECK(chunks[0].ids[76] == 58);
  CHECK(chunks[1].ids[1] == 6);   // g continues
  CHECK(chunks[1].ids[5] == 26 + 10);
  CHECK(chunks[1].ids[6] == 58);
  CHECK(chunks[1].ids[76] == 58);  // CLIP-L pads with EOS
  CHECK(tok.sd3_chunks("", 0).size() == 1);
  CHECK(tok.sd3_chunks("", 0)[0].ids[1] == 58);
}

TEST_CASE("tokenizer files: missing, truncated and malformed ones are named", "[encoders][tokenizer]") {
  test::TempDir dir;
  CHECK_THROWS_WITH(ClipTokenizer(dir / "nope.txt.gz"), Contains("not found") && Contains("openai/CLIP"));
  CHECK_THROWS_WITH(ClipTokenizer(dir.path()), Contains("vocab.json") && Contains("bpe_simple_vocab_16e6.txt.gz"));
  {
    gzFile f = gzopen((dir / "short.txt.gz").c_str(), "wb");
    const std::string text = "#version\na b\nc d\n";
    gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
    gzclose(f);
  }
  CHECK_THROWS_WITH(ClipTokenizer(dir / "short.txt.gz"), Contains("holds 2 merges"));
  test::write_bytes(dir / "plain.gz", "\x1f\x8b\x08 not really gzip");
  CHECK_THROWS_AS(ClipTokenizer(dir / "plain.gz"), InputError);
  std::ofstream(dir / "vocab.json") << "{\"a\": 0}";
  std::ofstream(dir / "merges.txt") << "#version: 0.2\nabc\n";
  CHECK_THROWS_WITH(ClipTokenizer(dir / "vocab.json"), Contains("merges.txt: line 2"));
  CHECK_THROWS_WITH(T5Tokenizer(dir / "spiece.model"), Contains("not found") && Contains("t5-v1_1-xxl"));
  CHECK_THROWS_WITH(T5Tokenizer(dir.path()), Contains("no spiece.model"));
}

#ifdef DIFFUSE_TESTDATA_DIR
nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

// Reads ../shared/testdata/tokenizers/clip_bpe_cases.json and bpe_simple_vocab_16e6.txt.gz.
TEST_CASE("parity: CLIP ids, BPE strings, SD3 chunks and weights equal the reference for every prompt",
          "[encoders][tokenizer][parity]") {
  const std::string dir = std::string(DIFFUSE_TESTDATA_DIR) + "/tokenizers/";
  const ClipTokenizer tok(dir + "bpe_simple_vocab_16e6.txt.gz");
  CHECK(tok.bos_id() == 49406);
  CHECK(tok.eos_id() == 49407);
  CHECK(tok.vocab_size() == 49408);
  const auto cases = read_json(dir + "clip_bpe_cases.json")["cases"];
  REQUIRE(cases.size() >= 30);
  for (const auto& c : cases) {
    const std::string prompt = c["prompt"];
    INFO("prompt: " << prompt);
    CHECK(tok.encode(prompt) == c["ids"].get<std::vector<std::int64_t>>());
    CHECK(tok.encode_pieces(prompt) == c["bpe_tokens"].get<std::vector<std::string>>());
    const auto l = tok.sd3_chunks(prompt, tok.eos_id()), g = tok.sd3_chunks(prompt, 0);
    const auto ref_l = c["sd3_clip_l_chunks"], ref_g = c["sd3_clip_g_chunks"], ref_w = c["sd3_weights"];
    REQUIRE(l.size() == ref_l.size());
    REQUIRE(g.size() == ref_g.size());
    for (std::size_t i = 0; i < l.size(); ++i) {
      CHECK(l[i].ids == ref_l[i].get<std::vector<std::int64_t>>());
      CHECK(g[i].ids == ref_g[i].get<std::vector<std::int64_t>>());
      const auto w = ref_w[i].get<std::vector<double>>();
      REQUIRE(l[i].weights.size() == w.size());
      for (std::size_t k = 0; k < w.size(); ++k) CHECK(l[i].weights[k] == Approx(w[k]).epsilon(1e-12));
    }
  }
  // The diffusers file form (vocab.json + merges.txt) of the same vocabulary gives the same ids.
  test::TempDir hf;
  std::ofstream(hf / "vocab.json") << nlohmann::json(tok.vocabulary()).dump();
  {
    std::ofstream m(hf / "merges.txt");
    m << "#version: 0.2\n";
    for (const auto& line : tok.merges()) m << line << "\n";
  }
  const ClipTokenizer hf_tok(hf.path());
  for (const auto& c : cases) CHECK(hf_tok.encode(c["prompt"].get<std::string>()) == c["ids"].get<std::vector<std::int64_t>>());
}

// Reads ../shared/testdata/tokenizers/t5_spm_cases.json and spiece.model.
TEST_CASE("parity: T5 ids and SD3 T5 sequences equal the reference for every prompt", "[encoders][tokenizer][parity]") {
  const std::string dir = std::string(DIFFUSE_TESTDATA_DIR) + "/tokenizers/";
  const T5Tokenizer tok(dir + "spiece.model");
  CHECK(tok.vocab_size() == 32000);
  const auto cases = read_json(dir + "t5_spm_cases.json")["cases"];
  REQUIRE(cases.size() >= 30);
  for (const auto& c : cases) {
    const std::string prompt = c["prompt"];
    INFO("prompt: " << prompt);
    CHECK(tok.encode(prompt) == c["ids"].get<std::vector<std::int64_t>>());
    CHECK(tok.encode_padded(prompt, 0) == c["ids_with_eos"].get<std::vector<std::int64_t>>());
    CHECK(tok.sd3_tokens(prompt).ids == c["sd3_t5_tokens"].get<std::vector<std::int64_t>>());
  }
}
#endif

}  // namespace t_tokenizers
