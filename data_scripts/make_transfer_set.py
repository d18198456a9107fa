"""Build the unlabelled transfer set of a distillation run (Turc et al. 2019), without dev text.

    python data_scripts/make_transfer_set.py --task sst2 --src $BERT_NP_DATA --out /work/runs/data
    python data_scripts/make_transfer_set.py --task mrpc --src $BERT_NP_DATA --out /work/runs/data

Writes, in --out, `transfer_<task>.jsonl` (one JSON object per line: {"text_a": ...} for sst2,
{"text_a": ..., "text_b": ...} for mrpc; no labels, so `bert_np.data.tasks.load_jsonl(path,
num_labels, require_label=False)` reads it) and `transfer_<task>_manifest.json` (counts per
source, dev-sentence removals, settings).

--task sst2: the SST-2 training sentences (labels dropped) and the sentences of the IMDB reviews
(by default the project's IMDB train split only; labels unused), IMDB sentences kept when they have
--min-words..--max-words whitespace words. --task mrpc: the MRPC training pairs (labels dropped).

Dev leakage (DESIGN.md, Distillation): a review containing a GLUE dev sentence (SST-2 and MRPC, of
at least --min-substring-words words, compared after normalisation) is dropped whole; a sentence
(or pair) equal to a dev sentence or containing a long one is dropped; all counted and printed.
Sentences are then deduplicated on their normalised form, first occurrence kept (SST-2 train
first), and shuffled (--seed). --max-sentences keeps all SST-2 training sentences (if they fit)
and a random sample of the IMDB ones.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bert_np import paths
from bert_np.data import corpora as C

TASKS = ("sst2", "mrpc")


def dedupe(items, key):
    """First occurrence of each key(item); (kept, dropped count)."""
    seen, kept = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept, len(items) - len(kept)


def sst2_rows(src, dev, imdb_texts, min_words, max_words, max_sentences, rng):
    """Rows and per-source counts of the SST-2 transfer set."""
    counts = {}
    sst2 = [" ".join(s.split()) for s in C.sst2_sentences(src, "train")]
    sst2 = [s for s in sst2 if s]
    counts["sst2_train"] = {"read": len(sst2)}
    sst2 = [s for s in sst2 if dev.keep_sentence(s, kind="sst2_train_sentence")]
    imdb, n_sentences, n_short, n_long = [], 0, 0, 0
    for text in imdb_texts:
        sentences = C.review_sentences(text)
        n_sentences += len(sentences)
        if dev.document_leaks(sentences, kind="imdb_review"):
            continue
        for s in sentences:
            n = len(s.split())
            n_short += n < min_words
            n_long += n > max_words
            if min_words <= n <= max_words and dev.keep_sentence(s, kind="imdb_sentence"):
                imdb.append(s)
    counts["imdb"] = {"reviews": len(imdb_texts), "sentences_read": n_sentences,
                      f"dropped_shorter_than_{min_words}_words": n_short,
                      f"dropped_longer_than_{max_words}_words": n_long}
    tagged, dupes = dedupe([("sst2_train", s) for s in sst2] + [("imdb", s) for s in imdb],
                           key=lambda t: C.normalize(t[1]))
    counts["duplicates_dropped"] = dupes
    pools = {name: [s for n, s in tagged if n == name] for name in ("sst2_train", "imdb")}
    if max_sentences is not None:
        take_sst2 = min(max_sentences, len(pools["sst2_train"]))
        take_imdb = min(max_sentences - take_sst2, len(pools["imdb"]))
        for name, take in (("sst2_train", take_sst2), ("imdb", take_imdb)):
            chosen = np.sort(rng.choice(len(pools[name]), size=take, replace=False))
            pools[name] = [pools[name][i] for i in chosen]
    for name, pool in pools.items():
        counts[name]["kept"] = len(pool)
    rows = [{"text_a": s} for pool in pools.values() for s in pool]
    return rows, counts


def mrpc_rows(src, dev, max_sentences, rng):
    """Rows and counts of the MRPC transfer set: the training pairs, unlabelled."""
    pairs = [(" ".join(a.split()), " ".join(b.split())) for a, b in C.mrpc_pairs(src, "train")]
    counts = {"mrpc_train": {"read": len(pairs)}}
    pairs = [(a, b) for a, b in pairs
             if dev.keep_sentence(a, kind="mrpc_train_pair") and
             dev.keep_sentence(b, kind="mrpc_train_pair")]
    pairs, dupes = dedupe(pairs, key=lambda p: (C.normalize(p[0]), C.normalize(p[1])))
    counts["duplicates_dropped"] = dupes
    if max_sentences is not None and max_sentences < len(pairs):
        chosen = np.sort(rng.choice(len(pairs), size=max_sentences, replace=False))
        pairs = [pairs[i] for i in chosen]
    counts["mrpc_train"]["kept"] = len(pairs)
    return [{"text_a": a, "text_b": b} for a, b in pairs], counts


def build(task: str, src: Path, out: Path, imdb_splits=("train",), min_words=3, max_words=64,
          max_sentences=None, dev_sets=C.DEV_SETS, min_substring_words=C.MIN_SUBSTRING_WORDS,
          seed=0, imdb_texts=None) -> dict:
    """Write transfer_<task>.jsonl and its manifest in `out`; return the manifest. `imdb_texts`
    replaces the IMDB reviews read from `src` (tests use a small synthetic list)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    dev = C.dev_filter(src, dev_sets, min_substring_words)
    rng = np.random.default_rng(seed)
    if task == "sst2":
        if imdb_texts is None:
            imdb_texts = C.imdb_reviews(src, imdb_splits)
        rows, counts = sst2_rows(src, dev, imdb_texts, min_words, max_words, max_sentences, rng)
    else:
        rows, counts = mrpc_rows(src, dev, max_sentences, rng)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    path = Path(out) / f"transfer_{task}.jsonl"
    C.write_jsonl_rows(path, rows)
    manifest = {
        "file": {"path": str(path), "rows": len(rows),
                 "tokens": sum(len(v.split()) for r in rows for v in r.values()),
                 "format": ('{"text_a": ...}' if task == "sst2"
                            else '{"text_a": ..., "text_b": ...}') + " per line, no labels"},
        "task": task,
        "sources": counts,
        "dev_leakage": {"dev_sets": list(dev_sets), **dev.report()},
        "settings": {"imdb_splits": list(imdb_splits) if task == "sst2" else [],
                     "min_words": min_words, "max_words": max_words,
                     "max_sentences": max_sentences, "seed": seed},
    }
    C.write_json(Path(out) / f"transfer_{task}_manifest.json", manifest)
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--src", default=None, help="data directory (default $BERT_NP_DATA)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--imdb-splits", nargs="+", default=["train"], choices=C.IMDB_SPLITS,
                   help="project IMDB splits to take sentences from (sst2; default: train)")
    p.add_argument("--min-words", type=int, default=3, help="shortest IMDB sentence kept")
    p.add_argument("--max-words", type=int, default=64, help="longest IMDB sentence kept")
    p.add_argument("--max-sentences", type=int, default=None,
                   help="at most this many rows (SST-2 train first, then sampled IMDB)")
    p.add_argument("--dev-sets", nargs="+", default=list(C.DEV_SETS), choices=C.DEV_SETS)
    p.add_argument("--min-substring-words", type=int, default=C.MIN_SUBSTRING_WORDS)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    src = Path(a.src) if a.src else paths.data_dir()
    m = build(a.task, src, Path(a.out), a.imdb_splits, a.min_words, a.max_words,
              a.max_sentences, a.dev_sets, a.min_substring_words, a.seed)
    print(f"wrote {m['file']['rows']:,} rows ({m['file']['tokens']:,} whitespace tokens) to "
          f"{m['file']['path']}")
    for name, c in m["sources"].items():
        print(f"  {name}: {c}")
    removed = m["dev_leakage"]["removed"]
    print(f"removed for dev leakage: {sum(removed.values())} "
          f"({', '.join(f'{k} {v}' for k, v in removed.items()) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
