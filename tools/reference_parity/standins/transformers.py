"""Stand-in for Hugging Face transformers (not packaged in Debian 12): the two tokenizers the SD3.5
reference's other_impls.py loads, read from local files instead of the Hub. The folder is
$DIFFUSE_PARITY_TOKENIZERS: bpe_simple_vocab_16e6.txt.gz (CLIP's byte-level BPE merges) and
spiece.model (a T5-style SentencePiece model: pad 0, EOS 1, unk 2).

CLIP: text lowercased and whitespace collapsed, split into words, contractions, letters, single
digits and runs of other symbols (ASCII classes: the parity prompts are ASCII), each mapped through
the byte-to-unicode table and merged by BPE rank, with "</w>" marking a word's end; ids framed by
<|startoftext|> and <|endoftext|>. T5: SentencePiece pieces followed by EOS (1), as the fast T5
tokenizer returns them."""
import functools
import gzip
import os
import re

import sentencepiece


def _folder():
    d = os.environ.get("DIFFUSE_PARITY_TOKENIZERS")
    if not d:
        raise RuntimeError("transformers stand-in: set DIFFUSE_PARITY_TOKENIZERS to the tokenizer folder")
    return d


def _byte_table():
    """Byte -> printable character, in CLIP's order: the printable bytes first (themselves), then
    the rest, in byte order, mapped to 256, 257, ... The vocabulary lists the symbols in this order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


class CLIPTokenizer:
    _word = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-zA-Z]+|[0-9]|[^\sa-zA-Z0-9]+")

    @classmethod
    def from_pretrained(cls, name):
        return cls(os.path.join(_folder(), "bpe_simple_vocab_16e6.txt.gz"))

    def __init__(self, path):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        self._bytes = _byte_table()
        symbols = list(self._bytes.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self._ids = {piece: i for i, piece in enumerate(vocab)}
        self._rank = {m: i for i, m in enumerate(merges)}

    @functools.lru_cache(maxsize=None)
    def _bpe(self, word):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(self._rank.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, first = min(pairs)
            if rank == float("inf"):
                break
            best = (parts[first], parts[first + 1])
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(parts)

    def __call__(self, text):
        text = re.sub(r"\s+", " ", text).strip().lower()
        ids = [self._ids["<|startoftext|>"]]
        for word in self._word.findall(text):
            if word in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self._ids[word])
                continue
            mapped = "".join(self._bytes[b] for b in word.encode("utf-8"))
            ids.extend(self._ids[p] for p in self._bpe(mapped))
        ids.append(self._ids["<|endoftext|>"])
        return {"input_ids": ids}

    def get_vocab(self):
        return dict(self._ids)


class T5TokenizerFast:
    @classmethod
    def from_pretrained(cls, name):
        return cls(os.path.join(_folder(), "spiece.model"))

    def __init__(self, path):
        self._sp = sentencepiece.SentencePieceProcessor(model_file=path)

    def __call__(self, text):
        return {"input_ids": list(self._sp.encode(text)) + [1]}

    def get_vocab(self):
        return {self._sp.id_to_piece(i): i for i in range(self._sp.get_piece_size())}
