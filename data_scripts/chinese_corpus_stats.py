"""What the Chinese tasks' training text gives a pretraining run (issue 16, docs/results.md):
[UNK] share under bert-base-chinese's vocabulary, cased and lower-cased; document lengths;
sentences per document; instances per pass with NSP pairs and packed without NSP.

    python data_scripts/chinese_corpus_stats.py          # reads $BERT_NP_DATA, about a minute

Prints markdown tables. Only the training splits are read (what export_pretraining_text.py
writes), split into sentences as that script does.
"""
import sys
import unicodedata
from collections import Counter

import numpy as np

from bert_np import paths
from bert_np.data.pretraining import (create_instances, create_packed_instances,
                                      split_chinese_sentences)
from bert_np.data.tasks import load_split
from bert_np.tokenization import BertTokenizer

TASKS = ("tnews", "zh_sentiment")


def unk_kind(word: str, lowercase_tokenizer: BertTokenizer) -> str:
    """Why a pre-tokenized word became [UNK]."""
    if any(c.isupper() for c in word) and \
            lowercase_tokenizer.unk_id not in lowercase_tokenizer.encode_plain([word])[0]:
        return "Latin word with a capital letter"
    if len(word) == 1 and unicodedata.category(word)[0] in "PS":
        return f"punctuation or symbol {word}"
    if len(word) == 1 and "CJK" in unicodedata.name(word, ""):
        return "rare Chinese character"
    return "other"


def unk_table(texts: list[str], tokenizer: BertTokenizer, lowercase_tokenizer: BertTokenizer):
    """(tokens, [UNK] tokens, texts with an [UNK], Counter of kinds) of the texts."""
    encodings = tokenizer._tokenizer.encode_batch(texts, add_special_tokens=False)
    kinds, tokens, unks, texts_with = Counter(), 0, 0, 0
    for text, encoding in zip(texts, encodings):
        tokens += len(encoding.ids)
        spans = [o for i, o in zip(encoding.ids, encoding.offsets) if i == tokenizer.unk_id]
        unks += len(spans)
        texts_with += bool(spans)
        kinds.update(unk_kind(text[a:b], lowercase_tokenizer) for a, b in spans)
    return tokens, unks, texts_with, kinds


def nsp_accuracy_from_length(instances) -> float:
    """The best accuracy of "random B" predicted as "the pair has at least n tokens"."""
    lengths = np.array([len(x.input_ids) for x in instances])
    is_random = np.array([x.next_sentence_label == 1 for x in instances])
    return max(((lengths >= n) == is_random).mean() for n in range(lengths.max() + 2))


def padded_fill(instances, batch_size: int, rng) -> float:
    """Real tokens / padded tokens when batches of shuffled instances pad to their longest."""
    lengths = np.array([len(x.input_ids) for x in instances])[rng.permutation(len(instances))]
    padded = sum(batch.max() * len(batch) for batch in np.array_split(
        lengths, -(-len(lengths) // batch_size)))
    return lengths.sum() / padded


def main():
    data = paths.data_dir()
    vocab = data / "vocab" / "bert-base-chinese" / "vocab.txt"
    cased = BertTokenizer.from_vocab(vocab, lowercase=False)
    lower = BertTokenizer.from_vocab(vocab, lowercase=True)
    texts = {task: [e.text_a for e in load_split(task, "train")] for task in TASKS}

    print("| train text | casing | tokens | [UNK] | share | texts with an [UNK] |")
    print("|---|---|---|---|---|---|")
    kinds = {}
    for task in TASKS:
        for name, tokenizer in (("cased", cased), ("lower-cased", lower)):
            tokens, unks, texts_with, kinds[task, name] = unk_table(texts[task], tokenizer, lower)
            print(f"| {task} ({len(texts[task]):,}) | {name} | {tokens:,} | {unks:,} | "
                  f"{100 * unks / tokens:.2f}% | {texts_with:,} |")
    print("\n[UNK] by kind (cased / lower-cased):")
    for task in TASKS:
        for kind, n in kinds[task, "cased"].most_common():
            print(f"  {task}: {kind}: {n:,} / {kinds[task, 'lower-cased'][kind]:,}")

    documents, one_line = {}, {}        # sentences split as exported; each text one sentence
    for task in TASKS:
        sentences = [split_chinese_sentences(t) for t in texts[task]]
        ids = iter(lower.encode_plain([s for doc in sentences for s in doc]))
        documents[task] = [[next(ids) for _ in doc] for doc in sentences if doc]
        one_line[task] = [[[t for s in doc for t in s]] for doc in documents[task]]
    documents["both"] = documents["tnews"] + documents["zh_sentiment"]

    print("\n| corpus | documents | tokens | tokens per document: p10 / median / p90 / p99 / max"
          " | documents of one sentence |")
    print("|---|---|---|---|---|---|")
    for name, docs in documents.items():
        lengths = np.array([sum(map(len, d)) for d in docs])
        p = np.percentile(lengths, [10, 50, 90, 99]).astype(int)
        single = sum(len(d) == 1 for d in docs)
        print(f"| {name} | {len(docs):,} | {lengths.sum():,} | {' / '.join(map(str, p))} / "
              f"{lengths.max()} | {single:,} ({100 * single / len(docs):.0f}%) |")

    print("\n| corpus | T | pairs per pass (NSP) | tokens per pair | fill at B=128 | NSP from "
          "length alone | packed sequences per pass (no NSP) | fill |")
    print("|---|---|---|---|---|---|---|---|")
    corpora = {**{f"{task}, one line per text": one_line[task] for task in TASKS}, **documents}
    for name, docs in corpora.items():
        for T in (64, 128):
            rng = np.random.default_rng(0)
            pairs = create_instances(docs, rng, lower.cls_id, lower.sep_id, T)
            packed = create_packed_instances(docs, rng, lower.cls_id, lower.sep_id, T)
            print(f"| {name} | {T} | {len(pairs):,} | "
                  f"{np.mean([len(x.input_ids) for x in pairs]):.1f} | "
                  f"{100 * padded_fill(pairs, 128, rng):.0f}% | "
                  f"{100 * nsp_accuracy_from_length(pairs):.1f}% | {len(packed):,} | "
                  f"{100 * padded_fill(packed, 128, rng):.0f}% |")
    print()
    for name, docs in documents.items():
        counts = Counter(t for d in docs for s in d for t in s)
        top, n = counts.most_common(1)[0]
        print(f"{name}: always predicting {lower.convert_ids_to_tokens([top])[0]} is right for "
              f"{100 * n / sum(counts.values()):.1f}% of the tokens (MLM accuracy from "
              "frequencies alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
