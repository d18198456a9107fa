"""Fine-tuning tasks: what each task is (labels, pair or single text, metrics, language) and how to
load its splits as lists of `Example(text_a, text_b, label)`.

Splits are read from JSONL files in the common format of `bert_np.data.prepare`. For the built-in
tasks, `load_split` looks in a cache directory and, the first time, converts the raw files under
`$BERT_NP_DATA` into it:

    <cache>/<task>/{train,dev,test}.jsonl,  <cache> = $BERT_NP_CACHE/tasks or ~/.cache/bert_np/tasks

The cache is keyed by `CACHE_VERSION`, bumped whenever a converter's output changes. Any other
JSONL file in the same format is read with `load_jsonl`, which names file and line on bad input.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from bert_np import paths
from bert_np.data.prepare import SPLITS, DataFormatError, prepare_task

CACHE_ENV = "BERT_NP_CACHE"
CACHE_VERSION = "v1"

__all__ = ["Example", "Task", "TASKS", "get_task", "task_cache_dir", "load_split", "load_jsonl",
           "load_demo_split", "DataFormatError"]


class Example(NamedTuple):
    """One fine-tuning example; `text_b` is None for single-text tasks, `label` is None on
    unlabelled test rows, a class id for classification and a float for regression."""
    text_a: str
    text_b: str | None
    label: int | float | None


@dataclass(frozen=True)
class Task:
    """A fine-tuning task.

    label_names: class names, index = class id (empty for regression).
    num_labels: number of classes; 1 means regression (STS-B), trained with MSE.
    is_pair: whether each example has two texts (text_a, text_b).
    metrics: the names of the metrics `bert_np.train.metrics.compute_metrics` reports for it.
    main_metric: the one of them used to pick the best checkpoint (higher is better).
    language: 'en' or 'zh', which selects the vocabulary.
    test_has_labels: whether its test split is labelled (GLUE test sets are not, except MRPC).
    """
    name: str
    label_names: tuple[str, ...]
    num_labels: int
    is_pair: bool
    metrics: tuple[str, ...]
    main_metric: str
    language: str
    test_has_labels: bool
    description: str

    @property
    def is_regression(self) -> bool:
        """True when the model predicts one real number (num_labels == 1)."""
        return self.num_labels == 1


def _classification(name, label_names, is_pair, metrics, main_metric, language, test_has_labels,
                    description) -> Task:
    """A classification task, num_labels taken from its label names."""
    return Task(name, tuple(label_names), len(label_names), is_pair, tuple(metrics), main_metric,
                language, test_has_labels, description)


TNEWS_LABEL_NAMES = ("news_story", "news_culture", "news_entertainment", "news_sports",
                     "news_finance", "news_house", "news_car", "news_edu", "news_tech",
                     "news_military", "news_travel", "news_world", "news_stock",
                     "news_agriculture", "news_game")

TASKS: dict[str, Task] = {task.name: task for task in [
    _classification("sst2", ("negative", "positive"), False, ["accuracy"], "accuracy", "en",
                    False, "GLUE SST-2: sentiment of movie-review sentences"),
    _classification("mrpc", ("not_equivalent", "equivalent"), True, ["accuracy", "f1"], "f1",
                    "en", True, "GLUE MRPC: is sentence B a paraphrase of sentence A"),
    _classification("cola", ("unacceptable", "acceptable"), False, ["mcc"], "mcc", "en", False,
                    "GLUE CoLA: is the sentence grammatically acceptable"),
    Task("stsb", (), 1, True, ("pearson", "spearman"), "spearman", "en", False,
         "GLUE STS-B: similarity of two sentences, a score in [0, 5]"),
    _classification("rte", ("entailment", "not_entailment"), True, ["accuracy"], "accuracy",
                    "en", False, "GLUE RTE: does sentence A entail sentence B"),
    _classification("imdb", ("negative", "positive"), False, ["accuracy"], "accuracy", "en",
                    True, "IMDB: sentiment of full movie reviews"),
    _classification("tnews", TNEWS_LABEL_NAMES, False, ["accuracy"], "accuracy", "zh", True,
                    "CLUE TNEWS: topic of a Chinese news headline (15 classes)"),
    _classification("zh_sentiment", ("negative", "positive"), False, ["accuracy", "f1"],
                    "accuracy", "zh", True, "Chinese e-commerce reviews: sentiment"),
]}


def get_task(task: str | Task) -> Task:
    """The registered task of that name (a Task is returned unchanged)."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[task]


# ----------------------------------------------------------------------------- reading JSONL

def parse_label(value: object, num_labels: int, where: str) -> int | float:
    """A class id in [0, num_labels) or, for num_labels == 1, a real-valued score."""
    if num_labels == 1:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise DataFormatError(f"{where}: label {value!r} is not a finite number")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataFormatError(f"{where}: label {value!r} is not an integer class id")
    if not 0 <= value < num_labels:
        raise DataFormatError(f"{where}: label {value} is out of range [0, {num_labels})")
    return value


def parse_text(row: dict, key: str, where: str) -> str:
    """The string in field `key`."""
    if not isinstance(row[key], str):
        raise DataFormatError(f"{where}: field {key!r} is not a string")
    return row[key]


def parse_example(row: object, num_labels: int, is_pair: bool | None, require_label: bool,
                  where: str) -> Example:
    """Check one decoded JSON row and turn it into an Example."""
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object, found {type(row).__name__}")
    if "text_a" not in row:
        raise DataFormatError(f"{where}: missing field 'text_a'")
    if is_pair and "text_b" not in row:
        raise DataFormatError(f"{where}: missing field 'text_b' (this is a sentence-pair task)")
    if is_pair is False and "text_b" in row:
        raise DataFormatError(f"{where}: unexpected field 'text_b' (this is a single-text task)")
    if require_label and "label" not in row:
        raise DataFormatError(f"{where}: missing field 'label'")
    text_b = parse_text(row, "text_b", where) if "text_b" in row else None
    label = parse_label(row["label"], num_labels, where) if "label" in row else None
    return Example(parse_text(row, "text_a", where), text_b, label)


def read_examples(lines, source: str, num_labels: int, is_pair: bool | None,
                  require_label: bool) -> list[Example]:
    """Examples from an iterable of JSONL lines; `source` names the file in error messages."""
    examples = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{where}: invalid JSON ({e.msg})") from None
        examples.append(parse_example(row, num_labels, is_pair, require_label, where))
    return examples


def load_jsonl(path: str | Path, num_labels: int, is_pair: bool | None = None,
               require_label: bool = True) -> list[Example]:
    """Read a JSONL file of rows {"text_a": str, "text_b": str, "label": int | float}.

    num_labels: labels must be integers in [0, num_labels); 1 means real-valued labels.
    is_pair: True requires text_b on every row, False forbids it, None accepts either.
    require_label: False lets rows go without a label (an unlabelled test set).
    Blank lines are skipped. Raises DataFormatError naming file and line on invalid JSON, a
    missing field, a non-string text or a label of the wrong type or out of range, and naming
    the file when it is not a regular file (/dev/zero, a pipe), is larger than MAX_JSONL_BYTES or
    has a line longer than MAX_JSONL_LINE_BYTES (memory stays bounded whatever the input).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise DataFormatError(f"{path} is not a regular file (a device, pipe or directory)")
    if path.stat().st_size > MAX_JSONL_BYTES:
        raise DataFormatError(f"{path} has {path.stat().st_size:,} bytes, more than the "
                              f"{MAX_JSONL_BYTES:,} a JSONL task file may have")
    with open(path, "rb") as f:
        return read_examples(_utf8_lines(f, path), str(path), num_labels, is_pair, require_label)


MAX_JSONL_BYTES = 4 << 30       # 4 GiB: far above any task file (IMDB's train split is 33 MB)
MAX_JSONL_LINE_BYTES = 16 << 20  # 16 MiB per example


def _utf8_lines(f, path):
    """The lines of a binary file decoded as UTF-8, each read with a bounded buffer; a line that
    is not UTF-8, or is too long, names file and line."""
    for lineno, raw in enumerate(iter(lambda: f.readline(MAX_JSONL_LINE_BYTES + 1), b""),
                                 start=1):
        if len(raw) > MAX_JSONL_LINE_BYTES:
            raise DataFormatError(f"{path}:{lineno}: line longer than {MAX_JSONL_LINE_BYTES:,} "
                                  "bytes; is this a JSONL file?")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataFormatError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte "
                                  f"{e.start} of the line)") from None


# ----------------------------------------------------------------------------- built-in tasks

def default_cache_dir() -> Path:
    """$BERT_NP_CACHE/tasks, or ~/.cache/bert_np/tasks when the variable is not set."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "bert_np") / "tasks"


def task_cache_dir(task: str | Task, cache_dir: str | Path | None = None) -> Path:
    """The folder holding a task's converted {train,dev,test}.jsonl."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / CACHE_VERSION / get_task(task).name


def load_split(task: str | Task, split: str, cache_dir: str | Path | None = None,
               data_dir: str | Path | None = None) -> list[Example]:
    """The examples of split 'train', 'dev' or 'test' of a built-in task.

    If the split is not in the cache yet, the task is converted from the raw files under
    `data_dir` (default $BERT_NP_DATA) into `task_cache_dir(task, cache_dir)` first.
    """
    task = get_task(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    folder = task_cache_dir(task, cache_dir)
    path = folder / f"{split}.jsonl"
    if not path.exists():
        prepare_task(task.name, Path(data_dir) if data_dir else paths.data_dir(), folder)
    require_label = split != "test" or task.test_has_labels
    return load_jsonl(path, task.num_labels, task.is_pair, require_label)


DEMO_SPLITS = ("train", "dev")


def load_demo_split(split: str) -> list[Example]:
    """The SST-2 sample shipped with the package (bert_np/demo_data/sst2, see SOURCE.md there):
    'train' (3,000 rows) or 'dev' (the full 872-row SST-2 dev). Needs no data directory."""
    if split not in DEMO_SPLITS:
        raise ValueError(f"the demo has splits {', '.join(DEMO_SPLITS)}, not {split!r}")
    resource = resources.files("bert_np") / "demo_data" / "sst2" / f"{split}.jsonl"
    sst2 = TASKS["sst2"]
    with resource.open("r", encoding="utf-8") as f:
        return read_examples(f, str(resource), sst2.num_labels, sst2.is_pair, True)
