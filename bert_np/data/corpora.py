"""Unlabelled English text for pretraining and distillation, kept free of GLUE dev sentences.

Used by `data_scripts/make_pretraining_corpus.py` (an MLM + NSP corpus: IMDB reviews + WikiText-2)
and `data_scripts/make_transfer_set.py` (the unlabelled transfer set of a distillation run).

Leakage rule (DESIGN.md, Distillation: "a transfer set or a pretraining corpus must not contain
dev sentences"). Dev sentences are compared after `normalize`, which undoes the differences
between raw text and GLUE's tokenisation: SST-2 is lower-cased and PTB-tokenised
("it 's a charming ... journey . ", "does n't", "`` elling ''"), raw reviews are not
("It's a charming ... journey."). A `DevFilter` then removes
- a sentence whose normalised form equals a dev sentence's ("exact"), and
- a whole document (a review, an article, a sentence of the transfer set) whose normalised text
  contains a dev sentence of at least `min_substring_words` words, at word boundaries
  ("substring"). Shorter dev sentences ("bad .", "very bad .", "oh come on .") are only matched
  exactly: as substrings they would remove thousands of innocent reviews.
Every removal is counted, per rule and per dev source, so scripts can report it.

IMDB reviews are read from the tar.gz as a stream (`bert_np.data.prepare.read_imdb`). By default
only the project's IMDB train split is used (22,500 reviews): the 2,500 reviews of its IMDB dev
split and the 25,000 of its IMDB test split are evaluation text too and stay out.
"""
from __future__ import annotations

import html
import json
import re
import tarfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from bert_np.data.prepare import (IMDB_DEV_SIZE, IMDB_MEMBER, IMDB_PER_FOLDER, expect_count,
                                  find_imdb_archive, random_split)

# ---- normalisation ---------------------------------------------------------------------------

_PTB_NT = re.compile(r"\s+n['’`]t\b")                       # "does n't" -> "doesn't"
_CONTRACTION = re.compile(r"\s*['’`´]\s*(s|re|ve|ll|d|m|t)\b")  # "it 's", "it's" -> "its"
_WORD = re.compile(r"[^\W_]+")                               # letters and digits (any script)
_PTB_BRACKETS = (("-lrb-", " "), ("-rrb-", " "), ("-lsb-", " "), ("-rsb-", " "))


def normalize_words(text: str) -> list[str]:
    """The words of `text` as compared for leakage: lower-cased, accents removed, contractions
    joined the same way whether or not they were PTB-split, punctuation dropped."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    for bracket, replacement in _PTB_BRACKETS:
        text = text.replace(bracket, replacement)
    text = _PTB_NT.sub("n't", text)
    text = _CONTRACTION.sub(r"\1", text)
    return _WORD.findall(text)


def normalize(text: str) -> str:
    """`normalize_words` joined by single spaces: "It's  a Journey!" -> "its a journey"."""
    return " ".join(normalize_words(text))


# ---- the dev filter --------------------------------------------------------------------------

MIN_SUBSTRING_WORDS = 5


@dataclass
class DevFilter:
    """Exact and substring matching against normalised dev sentences (see the module notes).

    `sources` maps a normalised dev sentence to the name of its dev set ("sst2", "mrpc").
    Substring search is indexed by each long dev sentence's first word pair, so a document costs
    one dictionary look-up per word plus a confirming `in` test per candidate.
    """
    sources: dict[str, str]
    min_substring_words: int = MIN_SUBSTRING_WORDS
    removed: Counter = field(default_factory=Counter)     # (kind, rule, dev source) -> count
    matched: set = field(default_factory=set)             # dev sentences that removed something

    def __post_init__(self):
        self.sources = {k: v for k, v in self.sources.items() if k}
        self._anchors: dict[tuple[str, str], list[str]] = {}
        for sentence in self.sources:
            words = sentence.split(" ")
            if len(words) >= max(2, self.min_substring_words):
                self._anchors.setdefault((words[0], words[1]), []).append(sentence)

    @classmethod
    def from_sentences(cls, named: Iterable[tuple[str, str]],
                       min_substring_words: int = MIN_SUBSTRING_WORDS) -> "DevFilter":
        """A filter of (dev source name, raw dev sentence) pairs."""
        sources: dict[str, str] = {}
        for name, sentence in named:
            sources.setdefault(normalize(sentence), name)
        return cls(sources, min_substring_words)

    @property
    def num_substring_sentences(self) -> int:
        """Dev sentences long enough for substring matching."""
        return sum(len(v) for v in self._anchors.values())

    def exact(self, sentence: str) -> str | None:
        """The dev source whose sentence equals `sentence` after normalisation, else None."""
        return self.sources.get(normalize(sentence))

    def contained(self, text: str) -> str | None:
        """A long dev sentence contained in `text` (normalised, at word boundaries), else None."""
        words = normalize_words(text)
        padded = " " + " ".join(words) + " "
        for pair in zip(words, words[1:]):
            for candidate in self._anchors.get(pair, ()):
                if " " + candidate + " " in padded:
                    return candidate
        return None

    def document_leaks(self, sentences: Sequence[str], kind: str = "document") -> bool:
        """Whether a document (its sentences) contains a long dev sentence, also across its
        sentence boundaries; counts the removal under (kind, "substring", source)."""
        hit = self.contained(" ".join(sentences))
        if hit is not None:
            self.removed[(kind, "substring", self.sources[hit])] += 1
            self.matched.add(hit)
        return hit is not None

    def keep_sentence(self, sentence: str, kind: str = "sentence") -> bool:
        """False (and counted) when the sentence equals a dev sentence or contains a long one."""
        key = normalize(sentence)
        if key in self.sources:
            self.removed[(kind, "exact", self.sources[key])] += 1
            self.matched.add(key)
            return False
        hit = self.contained(sentence)
        if hit is not None:
            self.removed[(kind, "substring", self.sources[hit])] += 1
            self.matched.add(hit)
            return False
        return True

    def report(self) -> dict:
        """Removal counts as a JSON-able dict: {"sentence/exact/sst2": 3, ...} plus totals."""
        counts = {f"{kind}/{rule}/{src}": n for (kind, rule, src), n in sorted(self.removed.items())}
        by_source = Counter(self.sources.values())
        return {"removed": counts,
                "dev_sentences": dict(sorted(by_source.items())),
                "dev_sentences_matched": len(self.matched),
                "substring_rule_min_words": self.min_substring_words,
                "dev_sentences_for_substring_rule": self.num_substring_sentences}


# ---- dev sets ---------------------------------------------------------------------------------

def read_tsv_column(path: Path, column: str) -> list[str]:
    """One column of a GLUE TSV with a header (no quote handling, as GLUE needs)."""
    lines = Path(path).read_text(encoding="utf-8-sig").split("\n")
    header = lines[0].rstrip("\r").split("\t")
    index = header.index(column)
    return [line.rstrip("\r").split("\t")[index] for line in lines[1:] if line.strip()]


def sst2_sentences(data_dir: Path, split: str) -> list[str]:
    """The sentences of GLUE SST-2 `split` (train or dev)."""
    return read_tsv_column(Path(data_dir) / "glue" / "SST-2" / f"{split}.tsv", "sentence")


def mrpc_pairs(data_dir: Path, split: str) -> list[tuple[str, str]]:
    """The sentence pairs of GLUE MRPC `split` (train or dev)."""
    path = Path(data_dir) / "glue" / "MRPC" / f"{split}.tsv"
    return list(zip(read_tsv_column(path, "#1 String"), read_tsv_column(path, "#2 String")))


DEV_SETS = ("sst2", "mrpc")


def dev_filter(data_dir: Path, dev_sets: Sequence[str] = DEV_SETS,
               min_substring_words: int = MIN_SUBSTRING_WORDS) -> DevFilter:
    """A DevFilter of the GLUE dev sentences of `dev_sets` (SST-2 and MRPC by default)."""
    named = []
    for name in dev_sets:
        if name == "sst2":
            named += [("sst2", s) for s in sst2_sentences(data_dir, "dev")]
        elif name == "mrpc":
            named += [("mrpc", s) for pair in mrpc_pairs(data_dir, "dev") for s in pair]
        else:
            raise ValueError(f"unknown dev set {name!r}; known: {', '.join(DEV_SETS)}")
    return DevFilter.from_sentences(named, min_substring_words)


# ---- IMDB reviews -----------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]{0,200}>")
_LINE_BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SENTENCE_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
IMDB_SPLITS = ("train", "dev", "test")


def clean_review(text: str) -> list[str]:
    """Paragraphs of a raw review: `<br />` breaks lines, other tags and HTML entities go."""
    text = _LINE_BREAK_TAG.sub("\n", text)
    text = html.unescape(_TAG.sub(" ", text))
    return [" ".join(p.split()) for p in text.split("\n") if p.strip()]


def split_review_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph: a sentence ends at ".", "!" or "?" (runs such as "..." or "?!"
    included, then closing quotes or brackets) followed by whitespace and an upper-case letter, a
    digit, or an opening quote or bracket before one."""
    sentences, start = [], 0
    for m in _SENTENCE_BOUNDARY.finditer(paragraph):
        sentences.append(paragraph[start:m.end()].strip())
        start = m.end()
    sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


def review_sentences(text: str) -> list[str]:
    """The sentences of a raw review, paragraph by paragraph."""
    return [s for p in clean_review(text) for s in split_review_sentences(p)]


def imdb_reviews(data_dir: Path, splits: Sequence[str] = ("train",)) -> list[str]:
    """Raw texts (HTML and all) of the project's IMDB splits, in that order: the same partition
    as `bert_np.data.prepare.convert_imdb` (train 22,500 / dev 2,500 random official-train
    reviews, seed 0 / test 25,000), read here from the tar.gz as a stream because that converter
    turns `<br />` into spaces and paragraph breaks help sentence splitting."""
    for split in splits:
        if split not in IMDB_SPLITS:
            raise ValueError(f"unknown IMDB split {split!r}; known: {', '.join(IMDB_SPLITS)}")
    archive = find_imdb_archive(Path(data_dir))
    found = {"train": [], "test": []}
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            match = IMDB_MEMBER.fullmatch(member.name)
            if match and member.isfile():
                split, folder, review_id, _ = match.groups()
                text = tar.extractfile(member).read().decode("utf-8")
                found[split].append(((int(folder == "pos"), int(review_id)), text))
    ordered = {split: [text for _, text in sorted(keyed, key=lambda kt: kt[0])]
               for split, keyed in found.items()}
    for split, texts in ordered.items():
        expect_count(texts, 2 * IMDB_PER_FOLDER, f"{archive}: aclImdb/{split}")
    train = ordered["train"]
    train, dev = random_split(train, [len(train) - IMDB_DEV_SIZE, IMDB_DEV_SIZE])
    parts = {"train": train, "dev": dev, "test": ordered["test"]}
    return [text for split in splits for text in parts[split]]


# ---- WikiText ----------------------------------------------------------------------------------

def wikitext_documents(paths: Sequence[Path]) -> list[list[str]]:
    """Articles of WikiText files as lists of sentences (the pretraining reader's own parser, so
    the markers are undone and <unk> becomes [UNK] exactly as `bert-np pretrain` would)."""
    from bert_np.data.pretraining import parse_wikitext
    documents = []
    for path in paths:
        documents += parse_wikitext(Path(path).read_text(encoding="utf-8").split("\n"))
    return documents


# ---- writing -----------------------------------------------------------------------------------

def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def format_documents(documents: Sequence[Sequence[str]]) -> str:
    """One sentence per line, a blank line between documents (the "lines" corpus format)."""
    return "\n\n".join("\n".join(doc) for doc in documents if doc) + "\n"


def corpus_counts(documents: Sequence[Sequence[str]]) -> dict:
    """Documents, sentences and whitespace tokens."""
    return {"documents": len(documents),
            "sentences": sum(len(d) for d in documents),
            "tokens": sum(len(s.split()) for d in documents for s in d)}


def write_json(path: Path, value: dict) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_rows(path: Path, rows: Iterable[dict]) -> None:
    """One JSON object per line ({"text_a": ...}), as `bert_np.data.tasks.load_jsonl` reads."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
