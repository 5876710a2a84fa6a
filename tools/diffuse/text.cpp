// `diffuse tokenize` and `diffuse encode-text`: SD3's tokenizers and text stack from the command line.
#include <chrono>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "command.hpp"
#include "diffuse/encoders/clip_tokenizer.hpp"
#include "diffuse/encoders/sd3_text_conditioning.hpp"
#include "diffuse/encoders/t5_tokenizer.hpp"
#include "diffuse/io/safetensors.hpp"

namespace diffuse::cli {
namespace {

template <class T>
std::string join(const std::vector<T>& v) {
  std::ostringstream s;
  for (std::size_t i = 0; i < v.size(); ++i) s << (i ? " " : "") << v[i];
  return s.str();
}

struct TokenizeOptions {
  std::string tokenizer, vocab, prompt;
  bool sd3 = false, pieces = false;
};

void run_tokenize(const TokenizeOptions& o) {
  if (o.tokenizer == "clip") {
    const encoders::ClipTokenizer tok(o.vocab);
    if (o.pieces) {
      std::cout << join(tok.encode_pieces(o.prompt)) << "\n";
    } else if (!o.sd3) {
      std::cout << join(tok.encode(o.prompt)) << "\n";
    } else {
      for (const auto& [label, pad] : {std::pair<const char*, std::int64_t>{"clip_l", tok.eos_id()}, {"clip_g", 0}}) {
        const auto chunks = tok.sd3_chunks(o.prompt, pad);
        for (std::size_t i = 0; i < chunks.size(); ++i) {
          std::cout << label << " chunk " << i << (i == 0 ? " (encoded by SD3)" : " (not encoded by SD3)") << ": "
                    << join(chunks[i].ids) << "\n";
          bool weighted = false;
          for (double w : chunks[i].weights) weighted |= w != 1.0;
          if (weighted) std::cout << label << " chunk " << i << " weights: " << join(chunks[i].weights) << "\n";
        }
      }
    }
  } else if (o.tokenizer == "t5") {
    const encoders::T5Tokenizer tok(o.vocab);
    if (o.pieces) throw InputError("--pieces is for the CLIP tokenizer");
    if (!o.sd3) {
      std::cout << join(tok.encode(o.prompt)) << "\n";
    } else {
      std::cout << "t5: " << join(tok.sd3_tokens(o.prompt).ids) << "\n";
    }
  } else {
    throw InputError("--tokenizer must be clip or t5, got '" + o.tokenizer + "'");
  }
}

struct EncodeTextOptions {
  std::string clip_l, clip_g, t5, model, tokenizers, out, dtype = "f32";
  std::vector<std::string> prompts;
  bool no_t5 = false;
  int t5_length = 77, threads = 0;
};

void run_encode_text(const EncodeTextOptions& o) {
  configure_threads(o.threads);
  encoders::SD3TextSources s;
  // An all-in-one checkpoint supplies every encoder that the separate options do not.
  s.clip_l = !o.clip_l.empty() ? o.clip_l : o.model;
  s.clip_g = !o.clip_g.empty() ? o.clip_g : o.model;
  s.t5 = o.no_t5 ? "" : (!o.t5.empty() ? o.t5 : o.model);
  s.tokenizers = o.tokenizers;
  if (s.clip_l.empty() && s.clip_g.empty() && s.t5.empty())
    throw InputError("no text encoder given: pass --clip-l, --clip-g, --t5 or --model");
  encoders::SD3TextOptions opt;
  opt.t5_length = o.t5_length;
  if (o.dtype == "bf16") opt.dtype = torch::kBFloat16;
  else if (o.dtype != "f32") throw InputError("--dtype must be f32 or bf16, got '" + o.dtype + "'");
  const auto t0 = std::chrono::steady_clock::now();
  const auto stack = encoders::SD3TextConditioning::load(s, opt);
  const auto t1 = std::chrono::steady_clock::now();
  std::cerr << "loaded " << (stack.has_clip_l() ? "CLIP-L " : "") << (stack.has_clip_g() ? "CLIP-G " : "")
            << (stack.has_t5() ? "T5 " : "") << "in " << std::chrono::duration<double>(t1 - t0).count() << " s\n";
  const auto f = stack.encode(o.prompts);
  std::cerr << "encoded " << o.prompts.size() << " prompt(s) in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() << " s: context "
            << f.context.sizes() << ", pooled " << f.pooled.sizes() << "\n";
  std::map<std::string, std::string> meta{{"software", "diffuse encode-text"}, {"t5_length", std::to_string(o.t5_length)}};
  for (std::size_t i = 0; i < o.prompts.size(); ++i) meta["prompt" + std::to_string(i)] = o.prompts[i];
  io::save_safetensors(o.out, {{"context", f.context}, {"pooled", f.pooled}}, meta);
  std::cerr << "wrote context and pooled to " << o.out << "\n";
}

}  // namespace

void add_text(CLI::App& app) {
  {
    auto* cmd = app.add_subcommand("tokenize", "Token ids of a prompt with CLIP's BPE or T5's SentencePiece tokenizer");
    auto o = std::make_shared<TokenizeOptions>();
    cmd->add_option("--tokenizer", o->tokenizer, "clip or t5")->required();
    cmd->add_option("--vocab", o->vocab,
                    "CLIP: bpe_simple_vocab_16e6.txt.gz, vocab.json/merges.txt or their folder; T5: spiece.model or its folder")
        ->required();
    cmd->add_option("--prompt", o->prompt, "the text")->required();
    cmd->add_flag("--sd3", o->sd3, "SD3's sequences: 77-token CLIP chunks (CLIP-L and CLIP-G padding), T5 with EOS and padding");
    cmd->add_flag("--pieces", o->pieces, "print CLIP's BPE strings instead of ids");
    cmd->callback([o] { run_tokenize(*o); });
  }
  {
    auto* cmd = app.add_subcommand("encode-text", "SD3 text conditioning of prompts: context (B, 77 + T, 4096) and pooled (B, 2048)");
    auto o = std::make_shared<EncodeTextOptions>();
    cmd->add_option("--clip-l", o->clip_l, "CLIP-L weights (clip_l.safetensors)");
    cmd->add_option("--clip-g", o->clip_g, "OpenCLIP bigG weights (clip_g.safetensors)");
    cmd->add_option("--t5", o->t5, "T5-XXL encoder weights (t5xxl_*.safetensors)");
    cmd->add_option("--model", o->model, "an all-in-one SD3 checkpoint supplying the encoders not given separately");
    cmd->add_option("--tokenizers", o->tokenizers,
                    "folder with bpe_simple_vocab_16e6.txt.gz and spiece.model, or diffusers tokenizer/ and tokenizer_3/");
    cmd->add_option("--prompt", o->prompts, "prompt (repeat for a batch; \"\" is the empty/negative prompt)")->required();
    cmd->add_option("--out", o->out, "output .safetensors with 'context' and 'pooled'")->required();
    cmd->add_flag("--no-t5", o->no_t5, "skip T5 (zeros in its place), as when memory is short");
    cmd->add_option("--t5-length", o->t5_length, "T5 tokens: 77 (paper), 0 (as the reference: max(77, n)) or N")
        ->capture_default_str();
    cmd->add_option("--dtype", o->dtype, "encoder compute dtype: f32 or bf16")->capture_default_str();
    cmd->add_option("--threads", o->threads, "CPU threads (0: all)")->capture_default_str();
    cmd->callback([o] { run_encode_text(*o); });
  }
}

}  // namespace diffuse::cli
