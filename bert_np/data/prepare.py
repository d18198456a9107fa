"""Convert the raw dataset files into one common format: JSONL rows

    {"text_a": str, "text_b": str, "label": int | float}

in `train.jsonl`, `dev.jsonl` and `test.jsonl`. `text_b` is present only for sentence-pair tasks,
`label` is absent on unlabelled test rows. Texts are stripped of surrounding whitespace (and of
stray U+FEFF byte-order marks).

Every converter reads the files below a data directory laid out as in `$BERT_NP_DATA` (see its
SOURCES.md): `glue/SST-2/train.tsv`, `imdb/aclImdb_v1_labeled.tar.gz`, `tnews/dev.json`, ...
and returns the rows in memory; `prepare_task` writes them, each file atomically.

Splits and malformed rows, per dataset:
- GLUE SST-2, MRPC, CoLA, STS-B, RTE: the GLUE train / dev / test files. Read by splitting lines on
  "\\n" and fields on "\\t" (no quote handling: GLUE texts contain unbalanced `"`). Strict: a row
  with the wrong number of fields, an unknown label or an empty text raises `DataFormatError`
  naming file and line, and each split must have exactly the published number of rows. Test rows
  are unlabelled, except MRPC, whose test split is read with its labels from
  `msr_paraphrase_test.txt` (the same 1,725 pairs in the order of GLUE's test.tsv).
- IMDB: train / test are the official 25,000 / 25,000 reviews read from the tar.gz as a stream;
  dev is 2,500 train reviews picked at random (seed `SPLIT_SEED`) and removed from train, so
  train has 22,500. `<br />` tags are replaced by spaces. Reviews are not deduplicated (the
  official train set repeats 97 reviews, so 14 dev texts also occur in train). Strict: a review
  whose file name rating disagrees with its pos/neg folder, or a count other than 12,500 per
  folder, raises.
- CLUE TNEWS: CLUE's test.json is unlabelled and unused; our test is CLUE's labelled dev.json
  (10,000 rows). Our train and dev come from CLUE's train.json (53,360 rows) when it is there, and
  otherwise from the partial train_processed.json (11,999 rows, the only one in the shared data):
  rows whose sentence also appears in dev.json (our test) or earlier in train are dropped and
  counted, and 10% of the rest (seed `SPLIT_SEED`) is our dev. Label ids 100..116 map to 0..14 in
  the order of labels.json. Strict on malformed JSON and unknown labels.
- zh_sentiment (online_shopping_10_cats.csv inside its zip): empty reviews and repeated reviews
  (keeping the first occurrence) are dropped and counted; the rest is split 80/10/10 into
  train / dev / test at random (seed `SPLIT_SEED`). Strict on a wrong column count or a label
  other than 0/1.
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import os
import re
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bert_np.files import atomic_write_bytes

SPLITS = ("train", "dev", "test")
SPLIT_SEED = 0


class DataFormatError(ValueError):
    """A raw or JSONL data file does not have the expected format; the message names the file
    (and the line or record) where the problem is."""


@dataclass
class Converted:
    """The rows of each split of one dataset, and how many raw rows were dropped, by reason."""
    splits: dict[str, list[dict]]
    dropped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        """One line per split with its row count, then the dropped rows."""
        lines = [f"{split}: {len(rows)} rows" for split, rows in self.splits.items()]
        lines += [f"dropped {n}: {reason}" for reason, n in sorted(self.dropped.items())]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- rows and files

def clean_text(text: str) -> str:
    """Text without surrounding whitespace and without U+FEFF byte-order marks."""
    return text.replace("\ufeff", "").strip()


def make_row(text_a: str, text_b: str | None = None, label: int | float | None = None) -> dict:
    """A row of the common format; `text_b` and `label` are left out when None."""
    row = {"text_a": text_a}
    if text_b is not None:
        row["text_b"] = text_b
    if label is not None:
        row["label"] = label
    return row


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line (UTF-8, non-ASCII kept readable) atomically (files.py), so
    readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_write_bytes(path, write)


def random_split(rows: list, sizes: list[int], seed: int = SPLIT_SEED) -> list[list]:
    """Partition `rows` at random into parts of the given sizes (which must add up to len(rows));
    each part keeps the original order of its rows. The same seed gives the same parts."""
    if sum(sizes) != len(rows):
        raise ValueError(f"sizes {sizes} do not add up to {len(rows)} rows")
    order = np.random.default_rng(seed).permutation(len(rows))
    bounds = np.cumsum([0] + sizes)
    return [[rows[i] for i in np.sort(order[lo:hi])] for lo, hi in zip(bounds[:-1], bounds[1:])]


def expect_count(rows: list, expected: int, where: str) -> None:
    """Raise unless there are exactly `expected` rows."""
    if len(rows) != expected:
        raise DataFormatError(f"{where}: {len(rows)} rows, expected {expected}; "
                              "is this the original, complete file?")


def read_utf8(where, data: bytes, encoding: str = "utf-8") -> str:
    """`data` decoded; bytes that are not UTF-8 raise DataFormatError naming `where` and the line."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataFormatError(f"{where}: not UTF-8 text ({e.reason} at line {line})") from None


def require_text(text: str, where: str) -> str:
    """The cleaned text; raise if nothing is left."""
    text = clean_text(text)
    if not text:
        raise DataFormatError(f"{where}: empty text")
    return text


# ----------------------------------------------------------------------------- GLUE (TSV)

@dataclass(frozen=True)
class TsvLayout:
    """Which file holds a split and which tab-separated columns hold what (0-based)."""
    file: str
    header: bool
    num_fields: int
    text_a: int
    text_b: int | None = None
    label: int | None = None


@dataclass(frozen=True)
class GlueSpec:
    """One GLUE task: its folder, the layout of each split, its known row counts, and how to read
    a label (a map from the raw string to the class id, or None for an STS-B score)."""
    folder: str
    layouts: dict[str, TsvLayout]
    counts: dict[str, int]
    label_map: dict[str, int] | None


BINARY = {"0": 0, "1": 1}
GLUE = {
    "sst2": GlueSpec("SST-2", {
        "train": TsvLayout("train.tsv", True, 2, text_a=0, label=1),
        "dev": TsvLayout("dev.tsv", True, 2, text_a=0, label=1),
        "test": TsvLayout("test.tsv", True, 2, text_a=1)},
        {"train": 67349, "dev": 872, "test": 1821}, BINARY),
    "mrpc": GlueSpec("MRPC", {
        "train": TsvLayout("train.tsv", True, 5, text_a=3, text_b=4, label=0),
        "dev": TsvLayout("dev.tsv", True, 5, text_a=3, text_b=4, label=0),
        "test": TsvLayout("msr_paraphrase_test.txt", True, 5, text_a=3, text_b=4, label=0)},
        {"train": 3668, "dev": 408, "test": 1725}, BINARY),
    "cola": GlueSpec("CoLA", {
        "train": TsvLayout("train.tsv", False, 4, text_a=3, label=1),
        "dev": TsvLayout("dev.tsv", False, 4, text_a=3, label=1),
        "test": TsvLayout("test.tsv", True, 2, text_a=1)},
        {"train": 8551, "dev": 1043, "test": 1063}, BINARY),
    "stsb": GlueSpec("STS-B", {
        "train": TsvLayout("train.tsv", True, 10, text_a=7, text_b=8, label=9),
        "dev": TsvLayout("dev.tsv", True, 10, text_a=7, text_b=8, label=9),
        "test": TsvLayout("test.tsv", True, 9, text_a=7, text_b=8)},
        {"train": 5749, "dev": 1500, "test": 1379}, None),
    "rte": GlueSpec("RTE", {
        "train": TsvLayout("train.tsv", True, 4, text_a=1, text_b=2, label=3),
        "dev": TsvLayout("dev.tsv", True, 4, text_a=1, text_b=2, label=3),
        "test": TsvLayout("test.tsv", True, 3, text_a=1, text_b=2)},
        {"train": 2490, "dev": 277, "test": 3000}, {"entailment": 0, "not_entailment": 1}),
}


def read_tsv(path: Path, header: bool, num_fields: int) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) for each data line of a GLUE TSV file. Lines are split on "\\n"
    and fields on "\\t" only; quote characters are ordinary text (like csv.QUOTE_NONE)."""
    lines = read_utf8(path, Path(path).read_bytes(), "utf-8-sig").split("\n")
    if lines[-1] == "":
        lines.pop()
    first = 1 if header else 0
    for lineno, line in enumerate(lines[first:], start=first + 1):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != num_fields:
            raise DataFormatError(f"{path}:{lineno}: expected {num_fields} tab-separated fields, "
                                  f"found {len(fields)}")
        yield lineno, fields


def parse_glue_label(raw: str, label_map: dict[str, int] | None, where: str) -> int | float:
    """A class id through `label_map`, or (label_map None) an STS-B similarity score in [0, 5]."""
    if label_map is not None:
        if raw not in label_map:
            raise DataFormatError(f"{where}: label {raw!r} is not one of {', '.join(label_map)}")
        return label_map[raw]
    try:
        score = float(raw)
    except ValueError:
        raise DataFormatError(f"{where}: score {raw!r} is not a number") from None
    if not 0.0 <= score <= 5.0:
        raise DataFormatError(f"{where}: score {score} is outside [0, 5]")
    return score


def read_glue_split(path: Path, layout: TsvLayout, label_map: dict[str, int] | None) -> list[dict]:
    """The rows of one GLUE split file."""
    rows = []
    for lineno, fields in read_tsv(path, layout.header, layout.num_fields):
        where = f"{path}:{lineno}"
        text_b = None if layout.text_b is None else require_text(fields[layout.text_b], where)
        label = None if layout.label is None else parse_glue_label(fields[layout.label],
                                                                   label_map, where)
        rows.append(make_row(require_text(fields[layout.text_a], where), text_b, label))
    return rows


def convert_glue(name: str, src_dir: Path) -> Converted:
    """One GLUE task, every split checked against its published row count."""
    spec = GLUE[name]
    folder = Path(src_dir) / "glue" / spec.folder
    splits = {}
    for split, layout in spec.layouts.items():
        path = folder / layout.file
        splits[split] = read_glue_split(path, layout, spec.label_map)
        expect_count(splits[split], spec.counts[split], str(path))
    return Converted(splits)


# ----------------------------------------------------------------------------- IMDB (tar.gz)

IMDB_ARCHIVES = ("aclImdb_v1_labeled.tar.gz", "aclImdb_v1.tar.gz")
IMDB_MEMBER = re.compile(r"aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt")
IMDB_PER_FOLDER = 12500
IMDB_DEV_SIZE = 2500


def find_imdb_archive(src_dir: Path) -> Path:
    """The IMDB tarball: the repacked labelled one of the shared data, or the official one."""
    for name in IMDB_ARCHIVES:
        path = Path(src_dir) / "imdb" / name
        if path.exists():
            return path
    raise FileNotFoundError(f"no IMDB archive in {Path(src_dir) / 'imdb'} "
                            f"(looked for {', '.join(IMDB_ARCHIVES)})")


def imdb_review(archive: Path, member: str, text: bytes, label: int, rating: int) -> dict:
    """One review as a row; its rating (from the file name) must agree with its folder."""
    if not (rating >= 7 if label == 1 else rating <= 4):
        raise DataFormatError(f"{archive}: {member}: rating {rating} contradicts its folder")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{archive}: {member}: not UTF-8 ({e})") from None
    return make_row(require_text(decoded.replace("<br />", " "), f"{archive}: {member}"),
                    label=label)


def read_imdb(archive: Path) -> dict[str, list[dict]]:
    """The labelled train and test reviews, read from the tar.gz as a stream (nothing is
    extracted to disk; the unlabelled train/unsup reviews are skipped). Each split is ordered by
    (label, review id), whatever the order of the archive."""
    found = {"train": [], "test": []}
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            match = IMDB_MEMBER.fullmatch(member.name)
            if match and member.isfile():
                split, folder, review_id, rating = match.groups()
                label = int(folder == "pos")
                row = imdb_review(archive, member.name, tar.extractfile(member).read(), label,
                                  int(rating))
                found[split].append(((label, int(review_id)), row))
    for split, keyed in found.items():
        for label in (0, 1):
            expect_count([k for k, _ in keyed if k[0] == label], IMDB_PER_FOLDER,
                         f"{archive}: aclImdb/{split}/{('neg', 'pos')[label]}")
    return {split: [row for _, row in sorted(keyed, key=lambda kr: kr[0])]
            for split, keyed in found.items()}


def convert_imdb(src_dir: Path) -> Converted:
    """IMDB with a random 2,500-review dev split taken out of the official train set."""
    reviews = read_imdb(find_imdb_archive(src_dir))
    train = reviews["train"]
    train, dev = random_split(train, [len(train) - IMDB_DEV_SIZE, IMDB_DEV_SIZE])
    return Converted({"train": train, "dev": dev, "test": reviews["test"]})


# ----------------------------------------------------------------------------- CLUE TNEWS (JSON)

TNEWS_DEV_FRACTION = 0.1


def read_json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(1-based line number, parsed value) for each non-blank line of a JSON-lines file."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = read_utf8(f"{path}:{lineno}", raw)
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFormatError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None


def read_json_array(path: Path) -> list:
    """A file holding one JSON array."""
    try:
        value = json.loads(read_utf8(path, Path(path).read_bytes()))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(value, list):
        raise DataFormatError(f"{path}: expected a JSON array")
    return value


def read_tnews_label_ids(path: Path) -> list[str]:
    """The raw TNEWS label ids ("100", "101", ...) in the order of labels.json; class i is the
    i-th of them."""
    return [str(entry["label"]) for entry in read_json_array(path)]


def tnews_row(record: object, label_index: dict[str, int], where: str) -> dict:
    """A labelled TNEWS record {"label": "1xx", "sentence": ...} as a row (keywords unused)."""
    if not isinstance(record, dict) or "sentence" not in record or "label" not in record:
        raise DataFormatError(f"{where}: expected an object with 'sentence' and 'label'")
    label = str(record["label"])
    if label not in label_index:
        raise DataFormatError(f"{where}: unknown label {label!r}")
    return make_row(require_text(record["sentence"], where), label=label_index[label])


def read_tnews_train(folder: Path, label_index: dict[str, int]) -> list[dict]:
    """CLUE's full train.json (JSON lines) if present, else the partial train_processed.json (one
    JSON array)."""
    full = folder / "train.json"
    if full.exists():
        return [tnews_row(record, label_index, f"{full}:{lineno}")
                for lineno, record in read_json_lines(full)]
    partial = folder / "train_processed.json"
    return [tnews_row(record, label_index, f"{partial}: element {i}")
            for i, record in enumerate(read_json_array(partial))]


def drop_seen_sentences(rows: list[dict], seen: set[str], dropped: Counter) -> list[dict]:
    """Rows whose text is neither in `seen` (counted as overlapping the test split) nor repeated
    from an earlier row (counted as a duplicate)."""
    kept, earlier = [], set()
    for row in rows:
        text = row["text_a"]
        if text in seen:
            dropped["train row whose sentence is in CLUE dev (our test)"] += 1
        elif text in earlier:
            dropped["repeated sentence within train"] += 1
        else:
            kept.append(row)
            earlier.add(text)
    return kept


def convert_tnews(src_dir: Path) -> Converted:
    """TNEWS: test = CLUE dev; train / dev = 90% / 10% of the deduplicated CLUE train."""
    folder = Path(src_dir) / "tnews"
    label_index = {lid: i for i, lid in enumerate(read_tnews_label_ids(folder / "labels.json"))}
    test = [tnews_row(record, label_index, f"{folder / 'dev.json'}:{lineno}")
            for lineno, record in read_json_lines(folder / "dev.json")]
    dropped = Counter()
    rows = drop_seen_sentences(read_tnews_train(folder, label_index),
                               {row["text_a"] for row in test}, dropped)
    n_dev = round(TNEWS_DEV_FRACTION * len(rows))
    train, dev = random_split(rows, [len(rows) - n_dev, n_dev])
    return Converted({"train": train, "dev": dev, "test": test}, dropped)


# ----------------------------------------------------------------------------- zh_sentiment (CSV)

ZH_ARCHIVE = "online_shopping_10_cats.zip"
ZH_MEMBER = "online_shopping_10_cats.csv"
ZH_HOLDOUT_FRACTION = 0.1


def read_zh_reviews(archive: Path, dropped: Counter) -> list[dict]:
    """The reviews of online_shopping_10_cats.csv (columns cat,label,review) read from the zip;
    empty and repeated reviews are dropped and counted."""
    text = read_utf8(f"{archive}: {ZH_MEMBER}", zipfile.ZipFile(archive).read(ZH_MEMBER), "utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    rows, seen = [], set()
    for fields in reader:
        where = f"{archive}: {ZH_MEMBER}:{reader.line_num}"
        if len(fields) != 3:
            raise DataFormatError(f"{where}: expected 3 fields (cat,label,review), "
                                  f"found {len(fields)}")
        label = parse_glue_label(fields[1], BINARY, where)
        review = clean_text(fields[2])
        if not review:
            dropped["empty review"] += 1
        elif review in seen:
            dropped["repeated review (first occurrence kept)"] += 1
        else:
            rows.append(make_row(review, label=label))
            seen.add(review)
    return rows


def convert_zh_sentiment(src_dir: Path) -> Converted:
    """Chinese e-commerce reviews, split 80/10/10 into train / dev / test at random."""
    dropped = Counter()
    rows = read_zh_reviews(Path(src_dir) / "zh_sentiment" / ZH_ARCHIVE, dropped)
    n_held = round(ZH_HOLDOUT_FRACTION * len(rows))
    train, dev, test = random_split(rows, [len(rows) - 2 * n_held, n_held, n_held])
    return Converted({"train": train, "dev": dev, "test": test}, dropped)


# ----------------------------------------------------------------------------- entry points

CONVERTERS: dict[str, Callable[[Path], Converted]] = {
    **{name: functools.partial(convert_glue, name) for name in GLUE},
    "imdb": convert_imdb,
    "tnews": convert_tnews,
    "zh_sentiment": convert_zh_sentiment,
}


def convert_task(name: str, src_dir: Path) -> Converted:
    """The rows of every split of task `name`, read from the raw files under `src_dir`."""
    if name not in CONVERTERS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(CONVERTERS)}")
    return CONVERTERS[name](Path(src_dir))


def prepare_task(name: str, src_dir: Path, out_dir: Path) -> Converted:
    """Convert task `name` from `src_dir` and write out_dir/{train,dev,test}.jsonl."""
    converted = convert_task(name, src_dir)
    for split, rows in converted.splits.items():
        write_jsonl(Path(out_dir) / f"{split}.jsonl", rows)
    return converted


DEMO_TRAIN_SIZE = 3000


def make_sst2_demo(src_dir: Path, out_dir: Path, n_train: int = DEMO_TRAIN_SIZE,
                   seed: int = SPLIT_SEED) -> Converted:
    """The SST-2 demo sample: `n_train` train rows drawn at random without replacement (natural
    label distribution, original order kept) and the full dev set."""
    sst2 = convert_glue("sst2", src_dir).splits
    train, _ = random_split(sst2["train"], [n_train, len(sst2["train"]) - n_train], seed)
    demo = Converted({"train": train, "dev": sst2["dev"]})
    for split, rows in demo.splits.items():
        write_jsonl(Path(out_dir) / f"{split}.jsonl", rows)
    return demo


def main(argv: list[str] | None = None, task: str | None = None,
         description: str = "Convert a dataset to train/dev/test.jsonl.") -> int:
    """Command line: convert one task (given as `task`, or as the first argument) from --src
    (default $BERT_NP_DATA) into --out, and print the row counts."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if task is None:
        parser.add_argument("task", choices=sorted(CONVERTERS))
    parser.add_argument("--src", default=os.environ.get("BERT_NP_DATA"),
                        help="data directory holding glue/, imdb/, tnews/, zh_sentiment/ "
                             "(default: $BERT_NP_DATA)")
    parser.add_argument("--out", required=True, help="output directory for the .jsonl files")
    args = parser.parse_args(argv)
    if not args.src:
        parser.error("no data directory: pass --src or set $BERT_NP_DATA")
    name = task or args.task
    converted = prepare_task(name, Path(args.src), Path(args.out))
    print(f"{name} -> {args.out}\n{converted.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
