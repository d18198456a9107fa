"""Build an in-domain English pretraining corpus (IMDB reviews + WikiText-2) without GLUE dev text.

    python data_scripts/make_pretraining_corpus.py --src $BERT_NP_DATA --out /work/runs/data

Writes, in --out:
    pretrain_train.txt     one sentence per line, a blank line between documents (the "lines"
                           format `bert-np pretrain --corpus` reads)
    pretrain_heldout.txt   the same format: --heldout-imdb reviews and --heldout-wiki articles,
                           held out of pretrain_train.txt (for `--eval-corpus`)
    pretrain_manifest.json counts (documents, sentences, whitespace tokens) per file and source,
                           dev-sentence removals, inputs and settings

Sources under --src: imdb/aclImdb_v1_labeled.tar.gz (read as a stream; by default only the
project's IMDB train split, 22,500 reviews, so that the IMDB dev and test reviews stay unseen),
and WikiText-2 (pretrain_corpus/wikitext-2/valid.txt, the tokenised validation split, and
pretrain_corpus/wikitext-2-raw-hf-test/test.txt, the raw test split; the shared data has no
WikiText-2 train file). A review is one document: `<br />` and other tags removed, HTML entities
decoded, split into sentences by a simple rule (see bert_np.data.corpora). A WikiText article is
one document, parsed exactly as `bert-np pretrain` parses WikiText (markers undone, <unk> ->
[UNK]). Repeated documents are kept once.

Dev leakage (DESIGN.md, Distillation): a document whose normalised text contains a GLUE dev
sentence of SST-2 or MRPC (of at least --min-substring-words words) is removed whole, and a
sentence equal to any dev sentence after normalisation is removed; both are counted and printed.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from bert_np import paths
from bert_np.data import corpora as C

DEFAULT_WIKITEXT = ("pretrain_corpus/wikitext-2/valid.txt",
                    "pretrain_corpus/wikitext-2-raw-hf-test/test.txt")


def filter_documents(documents, dev, kind):
    """Documents without dev text: leaking documents dropped, dev sentences dropped."""
    kept = []
    for doc in documents:
        if dev.document_leaks(doc, kind=kind):
            continue
        doc = [s for s in doc if dev.keep_sentence(s, kind=f"{kind}_sentence")]
        if doc:
            kept.append(doc)
    return kept


def dedupe_documents(documents):
    """First occurrence of each document (compared as normalised text); (kept, dropped count)."""
    seen, kept = set(), []
    for doc in documents:
        key = C.normalize(" ".join(doc))
        if key not in seen:
            seen.add(key)
            kept.append(doc)
    return kept, len(documents) - len(kept)


def hold_out(documents, n, rng):
    """(train, heldout): n documents picked at random; both keep the original order."""
    n = min(n, len(documents) - 2)
    chosen = set(rng.choice(len(documents), size=max(n, 0), replace=False).tolist())
    return ([d for i, d in enumerate(documents) if i not in chosen],
            [d for i, d in enumerate(documents) if i in chosen])


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build(src: Path, out: Path, imdb_splits=("train",), wikitext=DEFAULT_WIKITEXT,
          heldout_imdb=300, heldout_wiki=4, dev_sets=C.DEV_SETS,
          min_substring_words=C.MIN_SUBSTRING_WORDS, seed=0, imdb_texts=None) -> dict:
    """Build the corpus files in `out` and return the manifest. `imdb_texts` replaces the IMDB
    reviews read from `src` (tests use a small synthetic list)."""
    dev = C.dev_filter(src, dev_sets, min_substring_words)
    if imdb_texts is None:
        imdb_texts = C.imdb_reviews(src, imdb_splits)
    sources = {}
    imdb_docs = [C.review_sentences(t) for t in imdb_texts]
    imdb_docs = [d for d in imdb_docs if d]
    wiki_paths = [Path(src) / w for w in wikitext]
    wiki_docs = C.wikitext_documents(wiki_paths)
    read = {"imdb": len(imdb_docs), "wikitext": len(wiki_docs)}
    imdb_docs = filter_documents(imdb_docs, dev, "imdb")
    wiki_docs = filter_documents(wiki_docs, dev, "wikitext")
    imdb_docs, imdb_dupes = dedupe_documents(imdb_docs)
    wiki_docs, wiki_dupes = dedupe_documents(wiki_docs)
    rng = np.random.default_rng(seed)
    imdb_train, imdb_held = hold_out(imdb_docs, heldout_imdb, rng)
    wiki_train, wiki_held = (hold_out(wiki_docs, heldout_wiki, rng) if wiki_docs else ([], []))
    train, heldout = imdb_train + wiki_train, imdb_held + wiki_held
    out = Path(out)
    files = {"train": out / "pretrain_train.txt", "heldout": out / "pretrain_heldout.txt"}
    C.write_text_atomic(files["train"], C.format_documents(train))
    C.write_text_atomic(files["heldout"], C.format_documents(heldout))
    sources["imdb"] = {"archive": str(C.find_imdb_archive(src)), "splits": list(imdb_splits),
                       "reviews_read": read["imdb"], "duplicates_dropped": imdb_dupes,
                       "train": C.corpus_counts(imdb_train), "heldout": C.corpus_counts(imdb_held)}
    sources["wikitext"] = {"files": [str(p) for p in wiki_paths], "articles_read": read["wikitext"],
                           "duplicates_dropped": wiki_dupes,
                           "train": C.corpus_counts(wiki_train), "heldout": C.corpus_counts(wiki_held)}
    manifest = {
        "files": {name: {"path": str(path), "sha256": sha256(path),
                         **C.corpus_counts(train if name == "train" else heldout)}
                  for name, path in files.items()},
        "sources": sources,
        "dev_leakage": {"dev_sets": list(dev_sets), **dev.report()},
        "settings": {"heldout_imdb": heldout_imdb, "heldout_wiki": heldout_wiki, "seed": seed,
                     "format": "lines: one sentence per line, blank line between documents"},
    }
    C.write_json(out / "pretrain_manifest.json", manifest)
    return manifest


def print_summary(manifest: dict) -> None:
    for name, f in manifest["files"].items():
        print(f"{name:8s} {f['documents']:7,d} documents {f['sentences']:9,d} sentences "
              f"{f['tokens']:11,d} tokens  {f['path']}")
    for name, s in manifest["sources"].items():
        print(f"  {name:9s} train {s['train']['documents']:,} docs / {s['train']['tokens']:,} tokens,"
              f" heldout {s['heldout']['documents']:,} docs; duplicates dropped "
              f"{s['duplicates_dropped']:,}")
    leak = manifest["dev_leakage"]
    print(f"dev sentences checked: {leak['dev_sentences']} "
          f"({leak['dev_sentences_for_substring_rule']} long enough for substring matching)")
    removed = leak["removed"]
    print(f"removed for dev leakage: {sum(removed.values())} "
          f"({', '.join(f'{k} {v}' for k, v in removed.items()) or 'none'})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", default=None, help="data directory (default $BERT_NP_DATA)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--imdb-splits", nargs="+", default=["train"], choices=C.IMDB_SPLITS,
                   help="project IMDB splits to use (default: train only)")
    p.add_argument("--wikitext", nargs="*", default=list(DEFAULT_WIKITEXT),
                   help="WikiText files relative to --src (none: IMDB only)")
    p.add_argument("--heldout-imdb", type=int, default=300)
    p.add_argument("--heldout-wiki", type=int, default=4)
    p.add_argument("--dev-sets", nargs="+", default=list(C.DEV_SETS), choices=C.DEV_SETS)
    p.add_argument("--min-substring-words", type=int, default=C.MIN_SUBSTRING_WORDS)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    src = Path(a.src) if a.src else paths.data_dir()
    manifest = build(src, Path(a.out), a.imdb_splits, a.wikitext, a.heldout_imdb, a.heldout_wiki,
                     a.dev_sets, a.min_substring_words, a.seed)
    print_summary(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
