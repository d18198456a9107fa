"""BERT WordPiece tokenization: a thin wrapper over the Hugging Face `tokenizers` library.

The pipeline is the one BERT was trained with, and the one `transformers.BertTokenizerFast` builds:

    text -> BertNormalizer     clean control characters, put spaces around CJK ideographs,
                               lower-case and strip accents (only for uncased vocabularies)
         -> BertPreTokenizer   split on whitespace and punctuation
         -> WordPiece          greedy longest-match-first pieces, "##" marks a continuation
         -> template           [CLS] A [SEP]  or  [CLS] A [SEP] B [SEP], segment ids 0...0 1...1

Lower-casing follows the vocabulary's model: bert-base-uncased lower-cases and strips accents;
bert-base-chinese ships `tokenizer_config.json` with `do_lower_case: false`, so neither happens
(as in transformers, `strip_accents` follows `lowercase` unless set) and an English word with a
capital letter that is not in its vocabulary becomes [UNK]. The five special tokens are also
registered as "added tokens", so a literal "[MASK]" in the text becomes the mask id, exactly as in
transformers.

Truncation to `max_length` tokens keeps the head of each text ("head", transformers'
"longest_first") or its head and its tail ("head_tail", for long documents: of a text cut to n
tokens, the first round(n * 128 / 510) and the last n - round(n * 128 / 510); at max_length 512,
the first 128 and the last 382, Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?").

`train_wordpiece` learns a new vocabulary from text files with the same normaliser.
"""
from __future__ import annotations

import json
import numbers
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import WordPiece

from .data.batching import pad_inputs
from .files import (atomic_write_text, directory_lock, remove_quietly, remove_stale_temps,
                    replace_files, text_writer)

VOCAB_NAME = "vocab.txt"
CONFIG_NAME = "tokenizer_config.json"
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # also the id order of a freshly trained vocabulary
CONTINUATION_PREFIX = "##"
MAX_INPUT_CHARS_PER_WORD = 100  # longer words become [UNK], as in BERT
MAX_VOCAB_SIZE = 1_000_000  # far above real vocabularies; the trainer aborts the process near 1e9
# files of another tokenizer that transformers reads instead of vocab.txt (tokenizer.json), or on
# top of it (special and added tokens), or for other tokenizer classes; a save removes them
OTHER_TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "added_tokens.json",
                         "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                         "tokenizer.model")
TRUNCATIONS = ("head", "head_tail")  # which tokens of a text that is too long are kept
HEAD_TAIL_HEAD, HEAD_TAIL_BUDGET = 128, 510  # head_tail keeps 128 head tokens of every 510


class Encoding(NamedTuple):
    """One encoded example: `[CLS] A [SEP] (B [SEP])` ids and their segment ids, both length T."""
    input_ids: list[int]
    token_type_ids: list[int]


def read_vocab(path: str | Path) -> dict[str, int]:
    """Read a vocab.txt (one token per line, id = line number) into `{token: id}`.

    Only the line break is stripped: bert-base-chinese has tokens such as "\\u2028" that
    `str.splitlines` or `strip` would destroy.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"vocabulary file not found: {path}")
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        duplicates = [t for t, n in Counter(tokens).items() if n > 1][:5]
        raise ValueError(f"vocabulary {path} lists some tokens twice, e.g. {duplicates}")
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(f"vocabulary {path} lacks the special token(s) {missing}; "
                         f"a BERT vocabulary needs all of {list(SPECIAL_TOKENS)}")
    return vocab


def write_vocab(vocab: dict[str, int], path: str | Path) -> Path:
    """Write `{token: id}` as vocab.txt, one token per line in id order."""
    atomic_write_text(Path(path), vocab_text(vocab))
    return Path(path)


def vocab_text(vocab: dict[str, int]) -> str:
    """The content of vocab.txt: one token per line in id order."""
    return "".join(token + "\n" for token in sorted(vocab, key=vocab.__getitem__))


def read_tokenizer_config(model_dir: str | Path) -> dict:
    """The `tokenizer_config.json` of a model directory, or {} when there is none."""
    path = Path(model_dir) / CONFIG_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def bert_normalizer(lowercase: bool, strip_accents: bool | None = None,
                    handle_chinese_chars: bool = True) -> normalizers.BertNormalizer:
    """BERT's normaliser; `strip_accents=None` means "strip accents iff lower-casing"."""
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=handle_chinese_chars,
                                      strip_accents=strip_accents, lowercase=lowercase)


class BertTokenizer:
    """WordPiece tokenizer whose ids equal `transformers.BertTokenizerFast` on the same vocabulary.

    Build it with `from_vocab(path, lowercase=...)` or `from_pretrained(model_dir)`.
    """

    def __init__(self, vocab: dict[str, int], lowercase: bool = True,
                 strip_accents: bool | None = None, handle_chinese_chars: bool = True):
        missing = [token for token in SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ValueError(f"vocabulary lacks the special token(s) {missing}")
        self.vocab = dict(vocab)
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.handle_chinese_chars = handle_chinese_chars
        self._tokenizer = Tokenizer(WordPiece(self.vocab, unk_token=UNK,
                                              max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        self._tokenizer.normalizer = bert_normalizer(lowercase, strip_accents, handle_chinese_chars)
        self._tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS}:0 $A:0 {SEP}:0", pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
            special_tokens=[(CLS, self.vocab[CLS]), (SEP, self.vocab[SEP])])
        self._tokenizer.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX, cleanup=True)
        self._tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
        self._id_to_token = {index: token for token, index in self.vocab.items()}

    # ---- construction and saving -------------------------------------------------------------

    @classmethod
    def from_vocab(cls, path: str | Path, lowercase: bool = True,
                   strip_accents: bool | None = None) -> "BertTokenizer":
        """A tokenizer for the vocab.txt at `path` (uncased: lowercase=True)."""
        return cls(read_vocab(path), lowercase=lowercase, strip_accents=strip_accents)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path,
                        lowercase: bool | None = None) -> "BertTokenizer":
        """A tokenizer for a model directory with vocab.txt and optionally tokenizer_config.json.

        `do_lower_case`, `strip_accents` and `tokenize_chinese_chars` come from the config (the
        defaults when absent are those of transformers: True, None, True); `lowercase` overrides.
        """
        model_dir = Path(model_dir)
        if not (model_dir / VOCAB_NAME).is_file():
            raise ValueError(f"{model_dir} holds no {VOCAB_NAME}")
        config = read_tokenizer_config(model_dir)
        return cls(read_vocab(model_dir / VOCAB_NAME),
                   lowercase=config.get("do_lower_case", True) if lowercase is None else lowercase,
                   strip_accents=config.get("strip_accents"),
                   handle_chinese_chars=config.get("tokenize_chinese_chars", True))

    def save(self, out_dir: str | Path) -> Path:
        """Write vocab.txt and tokenizer_config.json into `out_dir`; returns the directory.

        transformers.AutoTokenizer.from_pretrained(out_dir) then loads this tokenizer: the files
        of another tokenizer that it would read instead (OTHER_TOKENIZER_FILES: tokenizer.json,
        special_tokens_map.json, added_tokens.json, ...) are removed. Both files are written to
        temporary files first (a failure there changes nothing), then the other tokenizer's files
        are removed and the two renamed into place, while holding the directory's lock (another
        process saving into `out_dir` meanwhile is refused)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        config = {"do_lower_case": self.lowercase, "strip_accents": self.strip_accents,
                  "tokenize_chinese_chars": self.handle_chinese_chars,
                  "tokenizer_class": "BertTokenizer"}
        writes = {out_dir / VOCAB_NAME: text_writer(vocab_text(self.vocab)),
                  out_dir / CONFIG_NAME: text_writer(json.dumps(config, indent=2) + "\n")}

        def remove_other_tokenizer():
            for name in OTHER_TOKENIZER_FILES:
                remove_quietly(out_dir / name)
        with directory_lock(out_dir):
            remove_stale_temps(out_dir, (VOCAB_NAME, CONFIG_NAME).__contains__)
            replace_files(writes, before_renames=remove_other_tokenizer)
        return out_dir

    # ---- vocabulary ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.vocab[PAD]

    @property
    def unk_id(self) -> int:
        return self.vocab[UNK]

    @property
    def cls_id(self) -> int:
        return self.vocab[CLS]

    @property
    def sep_id(self) -> int:
        return self.vocab[SEP]

    @property
    def mask_id(self) -> int:
        return self.vocab[MASK]

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids of [PAD] [UNK] [CLS] [SEP] [MASK]."""
        return tuple(self.vocab[token] for token in SPECIAL_TOKENS)

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        """Token strings to ids; tokens outside the vocabulary become [UNK]."""
        return [self.vocab.get(token, self.unk_id) for token in tokens]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        """Ids to token strings."""
        bad = [int(i) for i in ids if int(i) not in self._id_to_token]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary of {self.vocab_size}")
        return [self._id_to_token[int(i)] for i in ids]

    # ---- encoding ------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of `text`, without [CLS]/[SEP]."""
        return self._backend_encode([_checked_text(text)], add_special_tokens=False)[0].tokens

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text without [CLS]/[SEP] and without truncation (for corpus reading)."""
        return self._backend_ids([_checked_text(t) for t in texts])

    def encode(self, text_a: str, text_b: str | None = None, max_length: int | None = None,
               truncation: bool | str = True) -> Encoding:
        """`[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]` with segment ids 0 for the first part and
        1 for `B [SEP]`.

        With `max_length`, each text is given a number of tokens by transformers' "longest_first"
        rule (the longer text is cut first) and keeps, with `truncation` True or "head", its first
        tokens (exactly transformers' result), with "head_tail" its first and last tokens
        (`head_tail_lengths`); with `truncation=False` a longer result is an error.
        """
        return self.encode_many([text_a], None if text_b is None else [text_b],
                                max_length, truncation)[0]

    def encode_many(self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
                    max_length: int | None = None,
                    truncation: bool | str = True) -> list[Encoding]:
        """`encode` for many texts (or text pairs) at once, each keeping its own length."""
        if truncation is not False and truncation is not True and truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be True, False or one of {', '.join(TRUNCATIONS)}, "
                             f"got {truncation!r}")
        n_special = 2 if texts_b is None else 3
        if max_length is not None and max_length < n_special:
            raise ValueError(f"max_length={max_length} leaves no room for the {n_special} "
                             "special tokens")
        pairs = _checked_pairs(texts_a, texts_b)
        if texts_b is None:
            ids_a, ids_b = self._backend_ids(pairs), None
        else:
            ids_a = self._backend_ids([a for a, _ in pairs])
            ids_b = self._backend_ids([b for _, b in pairs])
        # Truncation and the [CLS]/[SEP] template are applied here rather than by the backend:
        # its pair truncation also builds every combination of overflowing pieces, which takes
        # seconds for two long texts. The rule is the backend's (and so transformers') own.
        encodings = []
        for i, a in enumerate(ids_a):
            b = None if ids_b is None else ids_b[i]
            if max_length is not None and truncation:
                a, b = _longest_first(a, b, max_length - n_special, truncation == "head_tail")
            encodings.append(self._template(a, b))
        too_long = [len(e.input_ids) for e in encodings
                    if max_length is not None and len(e.input_ids) > max_length]
        if too_long:
            raise ValueError(f"an encoding has {too_long[0]} tokens, more than max_length="
                             f"{max_length}, and truncation=False")
        return encodings

    def encode_batch(self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None,
                     max_length: int | None = None, truncation: bool | str = True,
                     pad_to_multiple_of: int | None = None) -> dict[str, np.ndarray]:
        """Encode a batch and pad it to its longest member (rounded up to a multiple of
        `pad_to_multiple_of` if given): int64 arrays `input_ids`, `token_type_ids`,
        `attention_mask` (1 = real token, 0 = [PAD]), all (B, T)."""
        encodings = self.encode_many(texts_a, texts_b, max_length, truncation)
        return pad_inputs([e.input_ids for e in encodings], [e.token_type_ids for e in encodings],
                          self.pad_id, pad_to_multiple_of)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`: "##" pieces joined to their word, spaces before punctuation removed."""
        self.convert_ids_to_tokens(ids)  # validates the ids
        return self._tokenizer.decode([int(i) for i in ids],
                                      skip_special_tokens=skip_special_tokens)

    def _template(self, a: list[int], b: list[int] | None) -> Encoding:
        """[CLS] A [SEP] (B [SEP]) and its segment ids 0...0 (1...1)."""
        ids = [self.cls_id, *a, self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            types += [1] * (len(b) + 1)
        return Encoding(ids, types)

    def _backend_ids(self, texts: list[str], chunk: int = 10_000) -> list[list[int]]:
        """The backend's ids of each text, without special tokens or truncation, `chunk` texts
        per call: each backend result also holds the token strings, offsets and masks, so a
        whole corpus at once (290k sentences) peaks at 1.3 GB where chunks of 10,000 stay under
        0.45 GB, for the same ids."""
        return [e.ids for start in range(0, len(texts), chunk)
                for e in self._backend_encode(texts[start:start + chunk], False)]

    def _backend_encode(self, inputs: list, add_special_tokens: bool = True,
                        max_length: int | None = None) -> list:
        """Run the `tokenizers` backend on texts or (text_a, text_b) pairs. Truncation is state of
        the backend object, so every call sets it explicitly before encoding."""
        if max_length is None:
            self._tokenizer.no_truncation()
        else:
            self._tokenizer.enable_truncation(max_length, strategy="longest_first")
        return self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens)

    def __repr__(self) -> str:
        return (f"BertTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
                f"strip_accents={self.strip_accents})")


def _longest_first(a: list[int], b: list[int] | None, budget: int, head_tail: bool = False):
    """Cut a (and b) to at most `budget` tokens together, from the end of the longer one first:
    the "longest_first" rule of the `tokenizers` library (utils/truncation.rs). With `head_tail`
    each text keeps its head and tail (`_cut`) instead of its head."""
    if b is None:
        return _cut(a, budget, head_tail), None
    if len(a) + len(b) <= budget:
        return a, b
    n1, n2 = len(a), len(b)
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    if swap:
        n1, n2 = n2, n1
    return _cut(a, n1, head_tail), _cut(b, n2, head_tail)


def head_tail_lengths(n: int) -> tuple[int, int]:
    """(head, tail): how many of the first and of the last tokens "head_tail" keeps of a text cut
    to n tokens; 128 + 382 for n = 510 (max_length 512), 64 + 190 for n = 254 (max_length 256)."""
    head = round(n * HEAD_TAIL_HEAD / HEAD_TAIL_BUDGET)
    return head, n - head


def _cut(ids: list[int], n: int, head_tail: bool) -> list[int]:
    """The first n tokens, or the head and tail of head_tail_lengths(n); all of a shorter text."""
    if len(ids) <= n or not head_tail:
        return ids[:n]
    head, tail = head_tail_lengths(n)
    return ids[:head] + ids[len(ids) - tail:]


def train_wordpiece(files: Sequence[str | Path], vocab_size: int, out_dir: str | Path,
                    lowercase: bool = True, min_frequency: int = 2,
                    limit_alphabet: int = 1000) -> BertTokenizer:
    """Learn a WordPiece vocabulary of at most `vocab_size` tokens from plain-text files (read line
    by line, normalised and pre-tokenised as BERT does) and write `out_dir`/vocab.txt and
    tokenizer_config.json. Ids 0-4 are [PAD] [UNK] [CLS] [SEP] [MASK]. Pairs seen fewer than
    `min_frequency` times are not merged; at most `limit_alphabet` single characters are kept.
    Returns the tokenizer of the new vocabulary."""
    missing = [str(f) for f in files if not Path(f).is_file()]
    if not files or missing:
        raise ValueError(f"training files not found: {missing}" if missing
                         else "train_wordpiece needs at least one training file")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, numbers.Integral):
        raise ValueError(f"vocab_size must be an integer, got {vocab_size!r}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beyond the "
                         f"{len(SPECIAL_TOKENS)} special tokens")
    if vocab_size > MAX_VOCAB_SIZE:
        raise ValueError(f"vocab_size={vocab_size} is larger than the {MAX_VOCAB_SIZE:,} tokens "
                         "bert_np trains (real vocabularies have 30,000 to 250,000)")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, numbers.Integral) \
            or min_frequency < 0:
        raise ValueError(f"min_frequency must be an integer >= 0, got {min_frequency!r}")
    tokenizer = Tokenizer(WordPiece(unk_token=UNK))
    tokenizer.normalizer = bert_normalizer(lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS),
                                        limit_alphabet=limit_alphabet,
                                        continuing_subword_prefix=CONTINUATION_PREFIX,
                                        show_progress=False)
    tokenizer.train([str(f) for f in files], trainer)
    trained = BertTokenizer(tokenizer.get_vocab(), lowercase=lowercase)
    trained.save(out_dir)
    return trained


def _checked_text(text) -> str:
    """`text` if it is a str of valid Unicode; a lone surrogate (from a bad decode, or
    surrogateescape) cannot be encoded and is reported with its position."""
    if not isinstance(text, str):
        raise ValueError(f"expected a text string, got {type(text).__name__}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"text holds the lone surrogate U+{ord(text[e.start]):04X} at index "
                             f"{e.start}, which is not valid Unicode; decode the input with "
                             "errors='replace'") from None
    return text


def _checked_pairs(texts_a: Sequence[str], texts_b: Sequence[str] | None) -> list:
    """The backend's input: a list of texts, or of (text_a, text_b) pairs."""
    if isinstance(texts_a, str) or (texts_b is not None and isinstance(texts_b, str)):
        raise ValueError("expected a list of texts; use encode for a single text")
    texts_a = [_checked_text(t) for t in texts_a]
    if texts_b is None:
        return texts_a
    texts_b = [_checked_text(t) for t in texts_b]
    if len(texts_a) != len(texts_b):
        raise ValueError(f"{len(texts_a)} first texts but {len(texts_b)} second texts")
    return list(zip(texts_a, texts_b))
