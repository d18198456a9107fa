"""Pretraining data for BERT: next-sentence pairs (NSP) and masked-language-model targets (MLM).

Written from the description in Devlin et al. (2018), section 3.1 and appendix A.1:

1. Corpus -> documents -> sentences -> WordPiece ids (`read_documents`, `tokenize_documents`).
2. Instances (`create_instances`): a sentence longer than `max_seq_length - 3` tokens (a long line
   of a corpus) is first cut into pieces of that length, so all its text is used, in linear time.
   Each document is then walked sentence by sentence, gathering a
   chunk of up to `target_length` tokens (`max_seq_length - 3`, or with probability
   `short_seq_prob` a random shorter length, so the model also sees short inputs). The chunk is cut
   at a random sentence boundary into segment A and B. With probability 1/2, B is replaced by a span
   of a random other document (NSP label 1, "random"); the unused sentences of the chunk go back to
   the document to start the next chunk. Otherwise B is the true continuation (label 0, "B follows
   A", the Hugging Face convention). A chunk of one sentence is cut at a random token instead: the
   paper's "sentences" are arbitrary spans of text, and this keeps the label split at 1/2 (only a
   one-token chunk, which cannot be cut, is always paired with a random B). A pair that is too long
   loses tokens from the longer segment, each from its front or back at random (the draws are
   counted, then each segment sliced once, so this is linear too). The result is
   `[CLS] A [SEP] B [SEP]` with segment ids 0 for `[CLS] A [SEP]` and 1 for `B [SEP]`.
3. Masking (`mask_instance`), separate from 2 so masks can be drawn afresh every epoch:
   `round(0.15 n)` of the n maskable tokens (all but [CLS] [SEP] [PAD]; at least 1, at most
   `max_predictions_per_seq`) are predicted; each of them becomes [MASK] with probability 0.8, a
   random token with probability 0.1 (drawn from the vocabulary without its five special tokens),
   and stays unchanged with probability 0.1. With whole-word masking, the pieces of a word (a token
   and the "##" pieces after it) are chosen together, in random word order, skipping words that
   would overshoot the count (the first word only has to fit in `max_predictions_per_seq`, so at
   least one word is predicted); the 80/10/10 choice is still made per token, as in the
   original.
4. Batching (`collate`, with the padding of `data.batching`): pad to the longest instance
   (optionally to a multiple of 8); labels are -100 (IGNORE_INDEX) where nothing is predicted.

Without NSP (`create_packed_instances`, MLM only, as RoBERTa, Liu et al. 2019): the documents, in
a random order and each followed by [SEP], form one stream of tokens, cut into blocks of
`max_seq_length - 2` tokens, each `[CLS] block [SEP]` (as transformers' run_mlm.py groups texts).
For a corpus of short documents (headlines, reviews) every sequence is then full, and no
next-sentence task is learnt that the length of a pair would give away.

`PretrainingDataset` ties these together for a training loop; every random choice comes from a
`np.random.Generator` derived from (seed, epoch), so any epoch, and any batch of it, can be rebuilt
exactly when a run resumes.

Corpus formats (`read_documents`):
- "lines": one sentence per line, blank lines between documents (Google's sample_text.txt).
- "wikitext": WikiText-2/103 files. An article starts at a top-level heading line " = Title = "
  and is one document; sub-headings (" = = Section = = ") are dropped; each remaining line is a
  paragraph, split into sentences by a simple rule: a sentence ends at ".", "!" or "?" followed by
  whitespace and an upper-case ASCII letter. Abbreviations before a capitalised word ("Mr. Smith")
  are therefore split too, which is harmless noise for pretraining. The tokenised release's
  markers are undone: " @-@ " -> "-", " @,@ " -> ",", " @.@ " -> ".", and "<unk>" becomes [UNK].
- "auto": "wikitext" when the file has a " = Title = " line, otherwise "lines".
`split_sentences` (English: ". " before a capital) and `split_chinese_sentences` (after 。！？!?)
split a text into the sentences such a file holds one per line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from bert_np.data.batching import pad_inputs, pad_token_labels
from bert_np.layers.losses import IGNORE_INDEX
from bert_np.tokenization import CLS, CONTINUATION_PREFIX, PAD, SEP, UNK

IS_NEXT, RANDOM_NEXT = 0, 1  # next_sentence_label: 0 = B follows A, 1 = B from another document
CORPUS_FORMATS = ("auto", "lines", "wikitext")

Document = list[list[int]]  # a document: its sentences, each a list of token ids

_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")        # " = Homarus gammarus = "
_WIKITEXT_HEADING = re.compile(r"^ (= )+.*?( =)+ $")   # any level: " = = Description = = "
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# a Chinese sentence: the shortest text up to a run of 。！？!? with its closing quotes, or the end
_CHINESE_SENTENCE = re.compile(r".*?(?:[。！？!?]+[”’」』）)]*|$)", re.DOTALL)
_WIKITEXT_MARKERS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), ("<unk>", UNK))

# independent random streams of a PretrainingDataset, each seeded with (seed, stream, epoch, ...)
_INSTANCE_STREAM, _SHUFFLE_STREAM, _MASK_STREAM = 0, 1, 2


# ---- corpus reading --------------------------------------------------------------------------

def split_sentences(paragraph: str) -> list[str]:
    """Split a paragraph at ". ", "! " or "? " before an upper-case letter."""
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]


def split_chinese_sentences(text: str) -> list[str]:
    """Split Chinese text after each run of 。！？!? (and the closing quotes or brackets right
    after it): "很好。还会再买！" -> ["很好。", "还会再买！"]."""
    return [s.strip() for s in _CHINESE_SENTENCE.findall(text) if s.strip()]


def parse_sentence_per_line(lines: Sequence[str]) -> list[list[str]]:
    """Documents of a one-sentence-per-line text whose documents are separated by blank lines."""
    documents, current = [], []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            documents.append(current)
            current = []
    return documents + [current] if current else documents


def parse_wikitext(lines: Sequence[str]) -> list[list[str]]:
    """Documents of a WikiText file: one per top-level article, sentences of its paragraphs."""
    documents, current = [], []
    for line in lines:
        line = line.rstrip("\n")
        if _WIKITEXT_TITLE.match(line):
            if current:
                documents.append(current)
            current = []
        elif line.strip() and not _WIKITEXT_HEADING.match(line):
            current.extend(split_sentences(undo_wikitext_markers(line)))
    return documents + [current] if current else documents


def undo_wikitext_markers(text: str) -> str:
    """Join WikiText's split hyphens and number separators and spell "<unk>" as [UNK]."""
    for marker, replacement in _WIKITEXT_MARKERS:
        text = text.replace(marker, replacement)
    return text


def is_wikitext(lines: Sequence[str]) -> bool:
    """Whether some line is a WikiText article title " = Title = "."""
    return any(_WIKITEXT_TITLE.match(line.rstrip("\n")) for line in lines)


def read_documents(paths: Sequence[str | Path], corpus_format: str = "auto") -> list[list[str]]:
    """Documents (lists of sentence strings) of all corpus files, in file order."""
    if corpus_format not in CORPUS_FORMATS:
        raise ValueError(f"corpus_format must be one of {CORPUS_FORMATS}, got {corpus_format!r}")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    documents = []
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"corpus file not found: {path}")
        try:
            lines = Path(path).read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as e:
            raise ValueError(f"corpus file {path} is not UTF-8 text (byte {e.start}: {e.reason})"
                             ) from None
        wikitext = corpus_format == "wikitext" or (corpus_format == "auto" and is_wikitext(lines))
        documents.extend(parse_wikitext(lines) if wikitext else parse_sentence_per_line(lines))
    return documents


def tokenize_documents(documents: Sequence[Sequence[str]], tokenizer) -> list[Document]:
    """WordPiece ids of every sentence (one batched tokenizer call); sentences without tokens and
    documents without sentences are dropped."""
    sentences = [sentence for document in documents for sentence in document]
    ids = iter(tokenizer.encode_plain(sentences))
    tokenized = [[next(ids) for _ in document] for document in documents]
    tokenized = [[sentence for sentence in document if sentence] for document in tokenized]
    return [document for document in tokenized if document]


# ---- instances: segment pairs with a next-sentence label --------------------------------------

@dataclass(frozen=True, eq=False)
class PretrainingInstance:
    """An unmasked training example."""
    input_ids: np.ndarray           # (T,) [CLS] A [SEP] B [SEP]  (packed: [CLS] block [SEP])
    token_type_ids: np.ndarray      # (T,) 0 for [CLS] A [SEP], 1 for B [SEP]  (packed: all 0)
    next_sentence_label: int | None  # IS_NEXT (0) or RANDOM_NEXT (1); None: packed, no NSP


def build_instance(tokens_a: Sequence[int], tokens_b: Sequence[int], next_sentence_label: int,
                   cls_id: int, sep_id: int) -> PretrainingInstance:
    """`[CLS] A [SEP] B [SEP]` with its segment ids."""
    input_ids = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
    token_type_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    return PretrainingInstance(np.array(input_ids, dtype=np.int64),
                               np.array(token_type_ids, dtype=np.int64), next_sentence_label)


def truncate_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                  rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Drop tokens from the longer segment, each from its front or back at random, until the pair
    holds at most `max_num_tokens`."""
    # the same draws as deleting one token at a time, counted instead: linear in the excess
    cut = {"a": [0, 0], "b": [0, 0]}       # tokens dropped from the front, from the back
    length = {"a": len(tokens_a), "b": len(tokens_b)}
    while length["a"] + length["b"] > max_num_tokens:
        longer = "a" if length["a"] > length["b"] else "b"
        cut[longer][0 if rng.random() < 0.5 else 1] += 1
        length[longer] -= 1
    (a_front, a_back), (b_front, b_back) = cut["a"], cut["b"]
    return (list(tokens_a[a_front:len(tokens_a) - a_back]),
            list(tokens_b[b_front:len(tokens_b) - b_back]))


def split_long_sentences(document: Document, max_num_tokens: int) -> Document:
    """The document with every sentence longer than `max_num_tokens` cut into consecutive pieces
    of at most that many tokens (a long line is then several instances, not one truncated)."""
    if all(len(sentence) <= max_num_tokens for sentence in document):
        return document
    return [sentence[i:i + max_num_tokens] for sentence in document
            for i in range(0, len(sentence), max_num_tokens)]


def sample_target_length(max_num_tokens: int, short_seq_prob: float,
                         rng: np.random.Generator) -> int:
    """Tokens to gather for one pair: `max_num_tokens`, or with probability `short_seq_prob` a
    uniform length in [2, max_num_tokens]."""
    if rng.random() < short_seq_prob:
        return int(rng.integers(2, max_num_tokens + 1))
    return max_num_tokens


def random_segment(documents: Sequence[Document], exclude_index: int, target_length: int,
                   rng: np.random.Generator) -> list[int]:
    """Consecutive sentences of a random document other than `exclude_index`, from a random
    sentence on, until `target_length` tokens are gathered or the document ends."""
    other = int(rng.integers(len(documents) - 1))
    document = documents[other + (other >= exclude_index)]
    tokens = []
    for sentence in document[int(rng.integers(len(document))):]:
        tokens.extend(sentence)
        if len(tokens) >= target_length:
            break
    return tokens


def split_chunk(chunk: Sequence[list[int]], documents: Sequence[Document], doc_index: int,
                target_length: int,
                rng: np.random.Generator) -> tuple[list[int], list[int], int, int]:
    """Segments A and B of one chunk of sentences: (tokens_a, tokens_b, label, sentences of the
    chunk left unused, to be given back to the document)."""
    is_random = rng.random() < 0.5
    if len(chunk) == 1:
        sentence = chunk[0]
        if is_random or len(sentence) < 2:
            tokens_b = random_segment(documents, doc_index, target_length - len(sentence), rng)
            return list(sentence), tokens_b, RANDOM_NEXT, 0
        cut = int(rng.integers(1, len(sentence)))
        return list(sentence[:cut]), list(sentence[cut:]), IS_NEXT, 0
    a_end = int(rng.integers(1, len(chunk)))  # sentences in A: 1 .. len(chunk) - 1
    tokens_a = [token for sentence in chunk[:a_end] for token in sentence]
    if is_random:
        tokens_b = random_segment(documents, doc_index, target_length - len(tokens_a), rng)
        return tokens_a, tokens_b, RANDOM_NEXT, len(chunk) - a_end
    return tokens_a, [token for sentence in chunk[a_end:] for token in sentence], IS_NEXT, 0


def create_instances_from_document(documents: Sequence[Document], doc_index: int,
                                   max_seq_length: int, short_seq_prob: float,
                                   rng: np.random.Generator, cls_id: int,
                                   sep_id: int) -> list[PretrainingInstance]:
    """All instances whose segment A comes from `documents[doc_index]` (see the module notes)."""
    max_num_tokens = max_seq_length - 3  # room for [CLS] A [SEP] B [SEP]
    document = documents[doc_index]
    instances, chunk, chunk_length = [], [], 0
    target_length = sample_target_length(max_num_tokens, short_seq_prob, rng)
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_length:
            tokens_a, tokens_b, label, n_unused = split_chunk(chunk, documents, doc_index,
                                                              target_length, rng)
            i -= n_unused
            tokens_a, tokens_b = truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
            instances.append(build_instance(tokens_a, tokens_b, label, cls_id, sep_id))
            chunk, chunk_length = [], 0
            target_length = sample_target_length(max_num_tokens, short_seq_prob, rng)
        i += 1
    return instances


def create_instances(documents: Sequence[Document], rng: np.random.Generator, cls_id: int,
                     sep_id: int, max_seq_length: int = 128, short_seq_prob: float = 0.1,
                     dupe_factor: int = 1) -> list[PretrainingInstance]:
    """Instances of every document, `dupe_factor` times over (each pass draws different pairs);
    in document order, not shuffled."""
    if len(documents) < 2:
        raise ValueError(f"next-sentence prediction needs at least 2 documents, got "
                         f"{len(documents)}")
    if max_seq_length < 5:
        raise ValueError(f"max_seq_length={max_seq_length} is too short for [CLS] A [SEP] B "
                         "[SEP] with one token in each segment (it must be at least 5)")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be a probability, got {short_seq_prob}")
    if dupe_factor < 1:
        raise ValueError(f"dupe_factor must be at least 1, got {dupe_factor}")
    documents = [split_long_sentences(document, max_seq_length - 3) for document in documents]
    return [instance
            for _ in range(dupe_factor)
            for doc_index in range(len(documents))
            for instance in create_instances_from_document(documents, doc_index, max_seq_length,
                                                           short_seq_prob, rng, cls_id, sep_id)]


# ---- instances without NSP: documents packed into full sequences -----------------------------

def create_packed_instances(documents: Sequence[Document], rng: np.random.Generator, cls_id: int,
                            sep_id: int, max_seq_length: int = 128) -> list[PretrainingInstance]:
    """MLM-only instances (see the module notes): the documents in a random order, each followed
    by [SEP], as one stream cut into blocks of `max_seq_length - 2` tokens, each `[CLS] block
    [SEP]` with segment ids 0 and no next-sentence label (the last block may be shorter)."""
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for a token between "
                         "[CLS] and [SEP] (it must be at least 3)")
    stream = []                  # every token of the corpus, a [SEP] after each document
    for d in rng.permutation(len(documents)):
        for sentence in documents[d]:
            stream.extend(sentence)
        stream.append(sep_id)
    block = max_seq_length - 2   # room for [CLS] block [SEP]
    instances = []
    for start in range(0, len(stream), block):
        tokens = stream[start:start + block]
        instances.append(PretrainingInstance(np.array([cls_id, *tokens, sep_id], dtype=np.int64),
                                             np.zeros(len(tokens) + 2, dtype=np.int64), None))
    return instances


# ---- masking ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class MaskingSpec:
    """What masking needs to know about the vocabulary, and how much to mask."""
    mask_id: int
    never_masked: np.ndarray     # (V,) bool: [CLS] [SEP] [PAD]
    is_continuation: np.ndarray  # (V,) bool: "##" pieces, for whole-word masking
    replacement_ids: np.ndarray  # ids a "random token" is drawn from: all but the special tokens
    mlm_probability: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word_masking: bool = False

    @classmethod
    def from_tokenizer(cls, tokenizer, mlm_probability: float = 0.15,
                       max_predictions_per_seq: int = 20,
                       whole_word_masking: bool = False) -> "MaskingSpec":
        """The spec for a `BertTokenizer`'s vocabulary."""
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq must be at least 1, got "
                             f"{max_predictions_per_seq}")
        tokens = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
        never_masked = np.isin(np.arange(tokenizer.vocab_size),
                               [tokenizer.vocab[t] for t in (CLS, SEP, PAD)])
        special = np.isin(np.arange(tokenizer.vocab_size), tokenizer.special_ids)
        return cls(mask_id=tokenizer.mask_id, never_masked=never_masked,
                   is_continuation=np.array([t.startswith(CONTINUATION_PREFIX) for t in tokens]),
                   replacement_ids=np.flatnonzero(~special),
                   mlm_probability=mlm_probability,
                   max_predictions_per_seq=max_predictions_per_seq,
                   whole_word_masking=whole_word_masking)


@dataclass(frozen=True, eq=False)
class MaskedInstance:
    """An instance with its MLM inputs and targets."""
    input_ids: np.ndarray       # (T,) with [MASK] / random / kept tokens at predicted positions
    token_type_ids: np.ndarray  # (T,)
    labels: np.ndarray          # (T,) original id at predicted positions, IGNORE_INDEX elsewhere
    next_sentence_label: int | None


def num_to_predict(num_maskable: int, mlm_probability: float, max_predictions: int) -> int:
    """round(p n) tokens, at least 1 and at most `max_predictions` (0 if nothing is maskable);
    `round` is Python's, halves to even."""
    if num_maskable == 0:
        return 0
    return min(max_predictions, max(1, round(num_maskable * mlm_probability)))


def group_words(positions: np.ndarray, input_ids: np.ndarray,
                is_continuation: np.ndarray) -> list[np.ndarray]:
    """Split maskable `positions` (sorted) into words: a word starts at a token that is not a "##"
    piece, or that does not directly follow another maskable position."""
    starts_word = ~is_continuation[input_ids[positions]] | (np.diff(positions, prepend=-2) != 1)
    return np.split(positions, np.flatnonzero(starts_word)[1:])


def choose_whole_words(words: Sequence[np.ndarray], count: int, max_predictions: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of whole words, taken in random order while they fit in `count` tokens.
    The first word only has to fit in `max_predictions`, so that at least one word is predicted
    even when every word has more pieces than `count`."""
    chosen, total = [], 0
    for w in rng.permutation(len(words)):
        if total >= count:
            break
        if total + len(words[w]) > (count if chosen else max_predictions):
            continue
        chosen.append(words[w])
        total += len(words[w])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def choose_mask_positions(input_ids: np.ndarray, spec: MaskingSpec,
                          rng: np.random.Generator) -> np.ndarray:
    """Sorted positions (P,) whose tokens the model must predict."""
    maskable = np.flatnonzero(~spec.never_masked[input_ids])  # (n,)
    count = num_to_predict(len(maskable), spec.mlm_probability, spec.max_predictions_per_seq)
    if spec.whole_word_masking:
        words = group_words(maskable, input_ids, spec.is_continuation)
        return choose_whole_words(words, count, spec.max_predictions_per_seq, rng)
    return np.sort(rng.choice(maskable, size=count, replace=False))


def mask_instance(instance: PretrainingInstance, spec: MaskingSpec,
                  rng: np.random.Generator) -> MaskedInstance:
    """Draw the MLM positions of one instance and corrupt them 80/10/10."""
    original = instance.input_ids                          # (T,)
    positions = choose_mask_positions(original, spec, rng)  # (P,)
    labels = np.full_like(original, IGNORE_INDEX)
    labels[positions] = original[positions]
    u = rng.random(len(positions))                          # (P,) one draw per predicted token
    to_mask, to_randomize = positions[u < 0.8], positions[(u >= 0.8) & (u < 0.9)]
    corrupted = original.copy()
    corrupted[to_mask] = spec.mask_id
    corrupted[to_randomize] = rng.choice(spec.replacement_ids, size=len(to_randomize))
    return MaskedInstance(corrupted, instance.token_type_ids, labels,
                          instance.next_sentence_label)


# ---- batching --------------------------------------------------------------------------------

def collate(instances: Sequence[MaskedInstance], pad_id: int,
            pad_to_multiple_of: int | None = None) -> dict[str, np.ndarray]:
    """A batch of int64 arrays: input_ids, token_type_ids, attention_mask, labels (B, T), padded to
    the longest instance (rounded up to a multiple of `pad_to_multiple_of`), and
    next_sentence_label (B,), left out for packed instances (no NSP). Padding has attention_mask
    0 and label IGNORE_INDEX."""
    batch = pad_inputs([x.input_ids for x in instances], [x.token_type_ids for x in instances],
                       pad_id, pad_to_multiple_of)
    batch["labels"] = pad_token_labels([x.labels for x in instances], pad_to_multiple_of)
    next_sentence_labels = [x.next_sentence_label for x in instances]
    if None not in next_sentence_labels:
        batch["next_sentence_label"] = np.array(next_sentence_labels, dtype=np.int64)
    return batch


def stream_rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one (seed, stream, epoch, ...) key: the same key always gives
    the same numbers, different keys give unrelated ones (NumPy SeedSequence)."""
    return np.random.default_rng([seed, *keys])


class PretrainingDataset:
    """A tokenized corpus that yields shuffled, freshly masked MLM + NSP batches every epoch.

    The corpus is tokenized once. Instances (segment pairs) are built once, `dupe_factor` passes
    over the corpus, or, with `new_pairs_each_epoch`, rebuilt every epoch (then `dupe_factor`
    passes per epoch). With `nsp=False` they are packed blocks instead (`create_packed_instances`,
    one pass; `new_pairs_each_epoch` packs the documents in a new order every epoch;
    `short_seq_prob` and `dupe_factor` apply to pairs only). Each epoch shuffles them and draws
    new masks. Batch b of epoch e depends only on (seed, e, b): `batches(epoch, start_batch=b)`
    resumes a run exactly.
    """

    def __init__(self, documents: Sequence[Document], tokenizer, *, max_seq_length: int = 128,
                 short_seq_prob: float = 0.1, dupe_factor: int = 1,
                 new_pairs_each_epoch: bool = False, mlm_probability: float = 0.15,
                 max_predictions_per_seq: int = 20, whole_word_masking: bool = False,
                 batch_size: int = 32, pad_to_multiple_of: int | None = None, seed: int = 0,
                 nsp: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.documents = list(documents)
        self.cls_id, self.sep_id, self.pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
        self.masking = MaskingSpec.from_tokenizer(tokenizer, mlm_probability,
                                                  max_predictions_per_seq, whole_word_masking)
        self.max_seq_length = max_seq_length
        self.short_seq_prob = short_seq_prob
        self.dupe_factor = dupe_factor
        self.new_pairs_each_epoch = new_pairs_each_epoch
        self.nsp = nsp
        self.batch_size = batch_size
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self._cached_instances: tuple[int | None, list[PretrainingInstance]] | None = None
        self.instances(0)  # validates the settings now rather than at the first batch

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], tokenizer, corpus_format: str = "auto",
                   **options) -> "PretrainingDataset":
        """Read and tokenize corpus files (see `read_documents`); `options` as in `__init__`."""
        documents = tokenize_documents(read_documents(paths, corpus_format), tokenizer)
        return cls(documents, tokenizer, **options)

    def instances(self, epoch: int) -> list[PretrainingInstance]:
        """The unmasked, unshuffled instances of `epoch` (the same for every epoch unless
        `new_pairs_each_epoch`)."""
        key = epoch if self.new_pairs_each_epoch else None
        if self._cached_instances is None or self._cached_instances[0] != key:
            rng = stream_rng(self.seed, _INSTANCE_STREAM, *([] if key is None else [key]))
            if self.nsp:
                instances = create_instances(self.documents, rng, self.cls_id, self.sep_id,
                                             self.max_seq_length, self.short_seq_prob,
                                             self.dupe_factor)
            else:
                instances = create_packed_instances(self.documents, rng, self.cls_id, self.sep_id,
                                                    self.max_seq_length)
            self._cached_instances = (key, instances)
        return self._cached_instances[1]

    def num_batches(self, epoch: int) -> int:
        """Batches in `epoch`; the last one may be smaller than `batch_size`."""
        return -(-len(self.instances(epoch)) // self.batch_size)

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The batches of `epoch` from `start_batch` on, as `collate` returns them."""
        instances = self.instances(epoch)
        order = stream_rng(self.seed, _SHUFFLE_STREAM, epoch).permutation(len(instances))
        for b in range(start_batch, self.num_batches(epoch)):
            rng = stream_rng(self.seed, _MASK_STREAM, epoch, b)
            chosen = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield collate([mask_instance(instances[i], self.masking, rng) for i in chosen],
                          self.pad_id, self.pad_to_multiple_of)

    def __repr__(self) -> str:
        return (f"PretrainingDataset({len(self.documents)} documents, "
                f"max_seq_length={self.max_seq_length}, batch_size={self.batch_size}, "
                f"nsp={self.nsp}, seed={self.seed})")
