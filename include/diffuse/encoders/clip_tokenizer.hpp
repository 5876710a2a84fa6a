#pragma once
// CLIP's byte-level BPE tokenizer (torch-free), as OpenAI's clip/simple_tokenizer.py and Hugging
// Face's CLIPTokenizer define it, plus SD3's chunking wrapper.
//
// Vocabulary files, read from where the user keeps them (they are not part of diffuse):
//  - OpenAI's `bpe_simple_vocab_16e6.txt.gz` (merges; ids follow from the merge order), or
//  - a diffusers / transformers tokenizer folder with `vocab.json` and `merges.txt`.
// Encoding: text clean-up (text_normalize.hpp), the pre-split pattern
//   <|startoftext|> | <|endoftext|> | 's 't 're 've 'm 'll 'd | \p{L}+ | \p{N} | [^\s\p{L}\p{N}]+
// (one digit per piece), each piece's UTF-8 bytes mapped to printable characters (GPT-2's
// bytes_to_unicode), '</w>' on the last character, and merges applied lowest rank first.
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "diffuse/core/error.hpp"
#include "diffuse/encoders/prompt_weights.hpp"
#include "diffuse/encoders/text_normalize.hpp"

namespace diffuse::encoders {

// One 77-token sequence of SD3's wrapper, with the per-token weights of the weight syntax.
struct TokenChunk {
  std::vector<std::int64_t> ids;
  std::vector<double> weights;
};

class ClipTokenizer {
 public:
  static constexpr std::int64_t kContextLength = 77;  // CLIP's position table
  static constexpr const char* kWhereFrom =
      "CLIP's BPE vocabulary is bpe_simple_vocab_16e6.txt.gz from github.com/openai/CLIP (clip/), or vocab.json + "
      "merges.txt in the tokenizer/ folder of a diffusers model (e.g. stabilityai/stable-diffusion-3-medium-diffusers)";

  // `path`: the .gz merges file, a vocab.json or merges.txt, or a folder holding either form.
  explicit ClipTokenizer(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    if (fs::is_directory(path)) {
      if (fs::is_regular_file(path / "vocab.json") && fs::is_regular_file(path / "merges.txt"))
        load_hf(path / "vocab.json", path / "merges.txt");
      else if (fs::is_regular_file(path / "bpe_simple_vocab_16e6.txt.gz"))
        load_openai(path / "bpe_simple_vocab_16e6.txt.gz");
      else
        throw InputError(path.string() + ": no CLIP tokenizer files here (looked for vocab.json + merges.txt and " +
                         "bpe_simple_vocab_16e6.txt.gz). " + kWhereFrom);
    } else if (!fs::is_regular_file(path)) {
      throw InputError(path.string() + ": CLIP tokenizer file not found. " + kWhereFrom);
    } else if (path.filename() == "vocab.json" || path.filename() == "merges.txt") {
      const auto dir = path.parent_path();
      for (const char* f : {"vocab.json", "merges.txt"})
        if (!fs::is_regular_file(dir / f))
          throw InputError((dir / f).string() + ": missing (a CLIP tokenizer folder needs vocab.json and merges.txt). " +
                           kWhereFrom);
      load_hf(dir / "vocab.json", dir / "merges.txt");
    } else {
      load_openai(path);
    }
    bos_ = id_of("<|startoftext|>");
    eos_ = id_of("<|endoftext|>");
  }

  std::int64_t bos_id() const { return bos_; }
  std::int64_t eos_id() const { return eos_; }
  std::size_t vocab_size() const { return encoder_.size(); }
  // token -> id, and the merges in rank order ("a b"): what a vocab.json + merges.txt pair holds.
  const std::unordered_map<std::string, std::int64_t>& vocabulary() const { return encoder_; }
  std::vector<std::string> merges() const {
    std::vector<std::string> out(ranks_.size());
    for (const auto& [m, r] : ranks_) out[static_cast<std::size_t>(r)] = m;
    return out;
  }

  // Token ids of `text` without start and end tokens (OpenAI's SimpleTokenizer.encode).
  std::vector<std::int64_t> encode(std::string_view text, bool unescape_html = true) const {
    std::vector<std::int64_t> ids;
    for (const auto& piece : pre_split(text::clip_clean(text, unescape_html)))
      for (const auto& t : bpe(piece)) ids.push_back(lookup(t));
    return ids;
  }
  // The BPE strings of encode(text) ('</w>' marks a word end).
  std::vector<std::string> encode_pieces(std::string_view text) const {
    std::vector<std::string> out;
    for (const auto& piece : pre_split(text::clip_clean(text)))
      for (auto& t : bpe(piece)) out.push_back(std::move(t));
    return out;
  }
  // [BOS] + ids + [EOS], cut to `length` (the last kept token replaced by EOS) and padded with `pad`.
  std::vector<std::int64_t> encode_padded(std::string_view text, std::int64_t pad, std::int64_t length = kContextLength) const {
    auto ids = encode(text);
    std::vector<std::int64_t> out{bos_};
    out.insert(out.end(), ids.begin(), ids.end());
    out.push_back(eos_);
    if (static_cast<std::int64_t>(out.size()) > length) {
      out.resize(static_cast<std::size_t>(length));
      out.back() = eos_;
    }
    out.resize(static_cast<std::size_t>(length), pad);
    return out;
  }

  // SD3's reference wrapper (other_impls.SDTokenizer): weight syntax parsed, every space-separated
  // word tokenized on its own (the Hugging Face tokenizer, which does not unescape HTML), packed as
  // [BOS] + up to 75 tokens + [EOS] per 77-token chunk, padded with `pad` (EOS for CLIP-L, 0 for
  // CLIP-G). A word of 8 or more tokens is split across chunks; a shorter one that does not fit moves
  // whole to the next chunk. SD3 encodes only the first chunk.
  std::vector<TokenChunk> sd3_chunks(std::string_view prompt, std::int64_t pad) const {
    constexpr std::size_t max_length = kContextLength, max_word_length = 8;
    std::vector<TokenChunk> chunks;
    TokenChunk batch;
    auto start = [&] {
      batch = {};
      batch.ids.push_back(bos_);
      batch.weights.push_back(1.0);
    };
    auto close = [&](std::size_t pad_to) {
      batch.ids.push_back(eos_);
      batch.weights.push_back(1.0);
      batch.ids.resize(std::max(batch.ids.size(), pad_to), pad);
      batch.weights.resize(batch.ids.size(), 1.0);
      chunks.push_back(std::move(batch));
    };
    start();
    for (const auto& [word, weight] : weighted_words(prompt)) {
      auto group = encode(word, false);
      const bool large = group.size() >= max_word_length;
      std::size_t pos = 0;
      while (pos < group.size()) {
        const std::size_t left = group.size() - pos;
        if (left + batch.ids.size() > max_length - 1) {
          const std::size_t room = max_length - batch.ids.size() - 1;
          if (large) {
            for (std::size_t i = 0; i < room; ++i) {
              batch.ids.push_back(group[pos + i]);
              batch.weights.push_back(weight);
            }
            pos += room;
          }
          close(max_length);
          start();
        } else {
          for (; pos < group.size(); ++pos) {
            batch.ids.push_back(group[pos]);
            batch.weights.push_back(weight);
          }
        }
      }
    }
    close(max_length);
    return chunks;
  }

  // The pre-split pieces of cleaned text.
  static std::vector<std::u32string> pre_split(const std::u32string& s) {
    std::vector<std::u32string> out;
    static const std::u32string_view specials[] = {U"<|startoftext|>", U"<|endoftext|>"};
    static const std::u32string_view contractions[] = {U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"};
    auto other = [](char32_t c) { return !text::is_space(c) && !text::is_letter(c) && !text::is_number(c); };
    std::size_t i = 0;
    const std::u32string_view v(s);
    while (i < s.size()) {
      bool matched = false;
      for (auto sp : specials)
        if (v.substr(i).starts_with(sp)) {
          out.emplace_back(sp);
          i += sp.size();
          matched = true;
          break;
        }
      if (matched) continue;
      for (auto c : contractions)
        if (v.substr(i).starts_with(c)) {
          out.emplace_back(c);
          i += c.size();
          matched = true;
          break;
        }
      if (matched) continue;
      std::size_t j = i;
      if (text::is_letter(s[i])) {
        while (j < s.size() && text::is_letter(s[j])) ++j;
      } else if (text::is_number(s[i])) {
        j = i + 1;
      } else if (other(s[i])) {
        while (j < s.size() && other(s[j])) ++j;
      } else {
        ++i;  // whitespace
        continue;
      }
      out.emplace_back(s.substr(i, j - i));
      i = j;
    }
    return out;
  }

 private:
  // The byte order in which OpenAI's vocabulary lists the single symbols: the 188 printable
  // Latin-1 bytes first, then the other 68 in byte order.
  static std::vector<int> byte_order() {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<bool> seen(256, false);
    for (int b : bs) seen[static_cast<std::size_t>(b)] = true;
    for (int b = 0; b < 256; ++b)
      if (!seen[static_cast<std::size_t>(b)]) bs.push_back(b);
    return bs;
  }
  // GPT-2's byte -> printable character table: printable bytes map to themselves, the other 68 to
  // U+0100 onwards, in byte order.
  static std::vector<std::string> byte_symbols() {
    constexpr std::size_t printable = 188;
    const auto order = byte_order();
    std::vector<std::string> sym(256);
    for (std::size_t i = 0; i < order.size(); ++i) {
      const auto b = static_cast<std::size_t>(order[i]);
      text::append_utf8(sym[b], static_cast<char32_t>(i < printable ? b : 256 + (i - printable)));
    }
    return sym;
  }

  void add_merge(const std::string& line, std::size_t lineno, const std::string& file) {
    const auto sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() || line.find(' ', sp + 1) != std::string::npos)
      throw InputError(file + ": line " + std::to_string(lineno) + " is not a merge 'a b': '" + line.substr(0, 60) + "'");
    ranks_.emplace(line, static_cast<int>(ranks_.size()));
  }

  void load_openai(const std::filesystem::path& path) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (!f) throw InputError(path.string() + ": cannot open. " + kWhereFrom);
    std::string data;
    char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0) data.append(buf, static_cast<std::size_t>(n));
    int err = 0;
    const char* msg = gzerror(f, &err);
    const bool bad = n < 0 || (err != Z_OK && err != Z_STREAM_END);
    const std::string why = bad && msg ? msg : "";
    gzclose(f);
    if (bad) throw InputError(path.string() + ": truncated or not gzip data (" + why + ")");
    // merges = lines[1 : 49152 - 256 - 2 + 1] (the first line is a version header)
    std::istringstream in(data);
    std::string line;
    std::getline(in, line);
    constexpr std::size_t n_merges = 49152 - 256 - 2;
    std::vector<std::string> merges;
    std::size_t lineno = 1;
    while (merges.size() < n_merges && std::getline(in, line)) {
      ++lineno;
      add_merge(line, lineno, path.string());
      merges.push_back(line);
    }
    if (merges.size() != n_merges)
      throw InputError(path.string() + ": holds " + std::to_string(merges.size()) + " merges, CLIP's vocabulary needs " +
                       std::to_string(n_merges) + " (truncated file?)");
    const auto sym = byte_symbols();
    std::int64_t id = 0;
    for (int b : byte_order()) encoder_.emplace(sym[static_cast<std::size_t>(b)], id++);
    for (int b : byte_order()) encoder_.emplace(sym[static_cast<std::size_t>(b)] + "</w>", id++);
    for (const auto& m : merges) {
      std::string joined = m;
      joined.erase(joined.find(' '), 1);
      encoder_.emplace(joined, id++);
    }
    encoder_.emplace("<|startoftext|>", id++);
    encoder_.emplace("<|endoftext|>", id++);
  }

  void load_hf(const std::filesystem::path& vocab, const std::filesystem::path& merges) {
    std::ifstream vf(vocab);
    nlohmann::json j;
    try {
      vf >> j;
    } catch (const std::exception& e) {
      throw InputError(vocab.string() + ": not a JSON vocabulary (" + e.what() + ")");
    }
    if (!j.is_object()) throw InputError(vocab.string() + ": expected a JSON object of token -> id");
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!it.value().is_number_integer()) throw InputError(vocab.string() + ": id of '" + it.key() + "' is not an integer");
      encoder_.emplace(it.key(), it.value().get<std::int64_t>());
    }
    std::ifstream mf(merges);
    std::string line;
    std::size_t lineno = 0;
    while (std::getline(mf, line)) {
      ++lineno;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line.starts_with("#version")) continue;
      add_merge(line, lineno, merges.string());
    }
    if (ranks_.empty()) throw InputError(merges.string() + ": no merges");
  }

  std::int64_t id_of(const std::string& token) const {
    const auto it = encoder_.find(token);
    if (it == encoder_.end()) throw InputError("CLIP vocabulary lacks the token '" + token + "'");
    return it->second;
  }
  std::int64_t lookup(const std::string& token) const {
    const auto it = encoder_.find(token);
    if (it == encoder_.end()) throw Error("CLIP BPE produced '" + token + "', which the vocabulary lacks");
    return it->second;
  }

  // Byte-level BPE of one pre-split piece; returns its symbols.
  std::vector<std::string> bpe(const std::u32string& piece) const {
    if (piece == U"<|startoftext|>" || piece == U"<|endoftext|>") return {text::u32_to_utf8(piece)};
    const std::string utf8 = text::u32_to_utf8(piece);
    std::vector<std::string> word;
    word.reserve(utf8.size());
    for (unsigned char b : utf8) word.push_back(symbols_[b]);
    if (word.empty()) return {};
    word.back() += "</w>";
    while (word.size() > 1) {
      int best = INT_MAX;
      std::size_t at = 0;
      for (std::size_t i = 0; i + 1 < word.size(); ++i) {
        const auto it = ranks_.find(word[i] + " " + word[i + 1]);
        if (it != ranks_.end() && it->second < best) {
          best = it->second;
          at = i;
        }
      }
      if (best == INT_MAX) break;
      // Merge every occurrence of the best pair, left to right.
      const std::string first = word[at], second = word[at + 1];
      std::vector<std::string> merged;
      merged.reserve(word.size());
      for (std::size_t i = 0; i < word.size();) {
        if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
          merged.push_back(first + second);
          i += 2;
        } else {
          merged.push_back(word[i++]);
        }
      }
      word = std::move(merged);
    }
    return word;
  }

  std::vector<std::string> symbols_ = byte_symbols();
  std::unordered_map<std::string, std::int64_t> encoder_;
  std::unordered_map<std::string, int> ranks_;
  std::int64_t bos_ = 0, eos_ = 0;
};

}  // namespace diffuse::encoders
