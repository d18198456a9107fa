"""Distilling a fine-tuned teacher into a compact student: `bert-np distill`.

The method of Turc et al. 2019 ("Well-Read Students Learn Better", DESIGN.md "Distillation"): the
student (ideally pre-trained with `bert-np pretrain`) learns the teacher's soft predictions on a
transfer set of unlabelled in-domain text, then may be fine-tuned on the labels with
`bert-np finetune --model <out>/best`.

transfer JSONL {"text_a": ..., "text_b": optional[, "label": optional]}
    -> the teacher's tokenizer (the student must share its vocabulary), texts cut to
       max_seq_length as finetune cuts them (--truncation: the head, or head + tail)
    -> the teacher's logits on every example, once, in length-sorted batches (predict_logits),
       cached (see below)
    -> length-bucketed batches with the batch field `teacher_logits`
    -> the training loop (loop.py) with compute_grads = the classifier's loss_and_grads(
       teacher_logits=, temperature=, alpha=): alpha * T^2 * KL(teacher || student) at temperature
       T, plus (1 - alpha) * the label loss
    -> the task's dev metrics after every epoch, the best epoch's student in <out>/best (Hugging
       Face format, vocab.txt, label names: finetune's FinetuneCallbacks), the last one in
       <out>/final (each written with its vocab.txt as one unit), log.jsonl, curves.png,
       resumable checkpoints <out>/step-N (finetune's, which also record the teacher-logit key).
A non-empty --out is refused unless --resume continues its run or --overwrite clears it (the
teacher-logit cache beside the run is kept: it is checked against its key before any reuse).
Under `mpirun -n N` every rank trains on its shard of each batch (parallel.py), like finetune:
rank 0 alone reads or computes the teacher's logits (and writes the cache) and hands them to the
other ranks; it alone evaluates and writes the log, checkpoints, best/, final/ and the plot.

The teacher-logit cache. The teacher's forward pass over the transfer set is the expensive part a
second run (other student, other learning rate) should not repeat. Its result is stored
    beside the run:        <out>/teacher_logits.npy + teacher_logits.json (always; resume uses it)
    shared between runs:   <teacher-cache>/teacher_logits-<digest>.npy + .json (with
                           --teacher-cache DIR; many teachers and transfer sets can share DIR)
The JSON holds the key and a checksum of the array; logits are reused only when the key is equal
and the checksum matches (a half-written pair is recomputed). The key is what the logits depend
on: the SHA-256 of the teacher's config.json and weight files (shards and their index included),
of the transfer file's bytes and of the vocabulary (tokens in id order and the lower-casing
options), max_seq_length, the truncation (head_tail; head, the default, leaves the key as it was
before the option existed), the dtype the teacher ran in, and which examples were used
(--max-transfer-examples with its seed).

Defaults: temperature 1 and alpha 1, as in Turc et al.'s pre-trained distillation: the student
minimises the cross-entropy to the teacher's plain softmax (T = 1) on unlabelled text (no label
term; a transfer set has no labels). DistilBERT's T = 2 softens the targets of a pre-training
teacher over 30k tokens; for a two-class teacher T = 1 keeps its confidence, and the T^2 factor
keeps the gradient scale comparable if a larger T is tried.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..config import PRESETS, BertConfig
from ..data.batching import EncodedSplit, pad_batch
from ..data.corpora import normalize
from ..data.tasks import TASKS, DataFormatError, Example, Task, get_task, load_jsonl, load_split
from ..files import atomic_write_bytes, atomic_write_text
from ..hf import CONFIG_NAME, checkpoint_files, file_sha256
from ..optim import AdamW, linear_warmup_decay
from ..tokenization import BertTokenizer
from .checkpoints import latest_state, prepare_output_dir, save_model_directory
from .finetune import (FinetuneCallbacks, FinetuneSettings, check_labels_match,
                       check_training_settings, encode_examples, epoch_loop_settings,
                       evaluate_classifier, label_map, load_classifier, load_for_inference,
                       metrics_before, open_log, predict_logits, run_summary, subset,
                       training_batches, warmup_and_total_steps)
from .metrics import format_metrics
from .loop import LoopState, run_loop
from .parallel import is_main_process, world
from .plots import plot_training_curves
from .pretrain import input_digests, resume_state
from .settings import check_number, setting, setting_like

CACHE_VERSION = 1
CACHE_NAME = "teacher_logits"
# compared by content on resume (a directory by its config.json; the teacher's weights are part
# of the teacher-logit key, the student's are replaced by the checkpoint's)
INPUT_FILES = ("teacher", "student", "transfer", "dev_file")


def _like(name, **changes):
    return setting_like(FinetuneSettings, name, **changes)


@dataclass
class DistillSettings:
    teacher: str = setting(help="the teacher: a fine-tuned BertForSequenceClassification "
                                "directory (config.json, weights, vocab.txt)")
    student: str = setting(help="the student: a Hugging Face directory (e.g. final/ of "
                                "`bert-np pretrain`; a new classification head is added) or a "
                                f"preset ({' '.join(PRESETS)}) initialised afresh; it must use "
                                "the teacher's vocabulary")
    task: str = _like("task")
    transfer: str = setting(help='the transfer set: a JSONL file of {"text_a": ..., "text_b": '
                                 '...} rows (text_b for sentence-pair tasks), labels optional')
    out: str = setting(help="output directory: best/ (the best epoch's student, vocab.txt, label "
                            "names; fine-tune it further with `bert-np finetune --model "
                            "<out>/best`), final/, step-N/ checkpoints, teacher_logits.npy/.json, "
                            "log.jsonl, curves.png")
    temperature: float = setting(1.0, help="softmax temperature T of teacher and student in the "
                                           "KL term (scaled by T^2); 1 as in Turc et al.")
    alpha: float = setting(1.0, help="weight of the teacher's term; 1 - alpha weighs the label "
                                     "loss, which needs a label on every transfer row")
    teacher_cache: str | None = setting(None, help="a directory where the teacher's logits are "
                                                   "kept for other runs to reuse (by teacher, "
                                                   "transfer file, vocabulary, max_seq_length); "
                                                   "unset: only beside the run in --out")
    epochs: int = _like("epochs", help="passes over the transfer set")
    lr: float = _like("lr")
    batch_size: int = _like("batch_size", help="transfer examples per optimizer step (the "
                                               "global batch, split between the MPI ranks and "
                                               "the gradient accumulation steps)")
    gradient_accumulation_steps: int = _like("gradient_accumulation_steps")
    max_seq_length: int = _like("max_seq_length")
    truncation: str = _like("truncation")
    warmup_ratio: float = _like("warmup_ratio")
    weight_decay: float = _like("weight_decay")
    max_grad_norm: float = _like("max_grad_norm")
    seed: int = _like("seed", help="seed of the student's new weights, the data order and dropout")
    dtype: str = _like("dtype")
    dropout: float | None = _like("dropout", help="the student's hidden, attention and classifier "
                                                  "dropout probability instead of its config's "
                                                  "(0: off, for exact comparisons)")
    max_steps: int | None = _like("max_steps")
    max_transfer_examples: int | None = setting(None, help="distil on a seeded random subset "
                                                           "of this many transfer examples; "
                                                           "unset: all")
    max_eval_examples: int | None = _like("max_eval_examples")
    dev_file: str | None = _like("dev_file")
    eval_batch_size: int = _like("eval_batch_size", help="examples per evaluation batch and per "
                                                         "teacher batch")
    checkpoint_every: int | None = _like("checkpoint_every")
    max_minutes: float | None = _like("max_minutes")
    overwrite: bool = _like("overwrite", help="clear a non-empty --out first, but keep the "
                                              "cache of the teacher's logits there (without it "
                                              "or --resume, a non-empty --out is refused)")

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"--task: unknown task {self.task!r}; known: {', '.join(TASKS)}")
        check_training_settings(self)               # the fields shared with FinetuneSettings
        check_number(self, "temperature", above=0)
        check_number(self, "alpha", minimum=0, maximum=1)
        check_number(self, "max_transfer_examples", integer=True, minimum=1, optional=True,
                     none_means="uses every example")
        if not Path(self.teacher).is_dir():
            raise FileNotFoundError(f"--teacher: no such model directory: {self.teacher}")
        if not Path(self.student).is_dir() and self.student not in PRESETS:
            raise FileNotFoundError(f"--student: no such model directory: {self.student} (and "
                                    f"not a preset: {', '.join(PRESETS)})")
        if not Path(self.transfer).is_file():
            raise FileNotFoundError(f"--transfer: no such file: {self.transfer}")
        if self.dev_file is not None and not Path(self.dev_file).is_file():
            raise FileNotFoundError(f"--dev-file: no such file: {self.dev_file}")


# ---- teacher, student and data ------------------------------------------------------------------

def load_teacher(settings: DistillSettings, task: Task):
    """The fine-tuned teacher (every weight present) and its tokenizer; its head must fit the
    task."""
    try:
        teacher, tokenizer = load_for_inference(settings.teacher, settings.dtype)
    except ValueError as e:
        raise ValueError(f"--teacher: {e}") from None
    if teacher.config.problem_type == "multi_label_classification":
        raise ValueError(f"--teacher: {settings.teacher} is a multi-label classifier; its logits "
                         "are not one softmax over the labels, which distillation learns")
    try:
        check_labels_match(teacher, task, str(settings.teacher))
    except ValueError as e:
        raise ValueError(f"--teacher: {e}") from None
    if settings.max_seq_length > teacher.config.max_position_embeddings:
        raise ValueError(f"--max-seq-length {settings.max_seq_length} exceeds the teacher's "
                         f"max_position_embeddings {teacher.config.max_position_embeddings}")
    return teacher, tokenizer


def check_student_vocabulary(student: str, tokenizer: BertTokenizer) -> None:
    """Refuse a student directory whose vocabulary (vocab.txt, else config's vocab_size) is not
    the teacher's: the student reads the teacher's token ids. A preset takes the teacher's."""
    directory = Path(student)
    if not directory.is_dir():
        return
    if (directory / "vocab.txt").is_file():
        own = BertTokenizer.from_pretrained(directory)
        if own.vocab != tokenizer.vocab:
            a, b = (sorted(v, key=v.get) for v in (own.vocab, tokenizer.vocab))
            i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            first = (f"id {i}: {a[i] if i < len(a) else None!r} vs "
                     f"{b[i] if i < len(b) else None!r}")
            raise ValueError(f"--student: {directory / 'vocab.txt'} differs from the teacher's "
                             f"vocabulary ({len(a)} vs {len(b)} tokens, first at {first}); the "
                             "student must use the teacher's vocabulary")
        if own.lowercase != tokenizer.lowercase:
            raise ValueError(f"--student: {directory} lower-cases={own.lowercase}, the teacher "
                             f"lower-cases={tokenizer.lowercase}")
    elif (directory / CONFIG_NAME).is_file():
        size = BertConfig.from_json_file(directory / CONFIG_NAME).vocab_size
        if size != tokenizer.vocab_size:
            raise ValueError(f"--student: {directory} has vocab_size {size}, the teacher's "
                             f"vocabulary {tokenizer.vocab_size} tokens")


def load_transfer(settings: DistillSettings, task: Task) -> tuple[list[Example], list | None]:
    """The transfer examples (labels optional; a seeded subset with --max-transfer-examples) and
    which were chosen ([limit, seed], None: all), for the cache key."""
    try:
        examples = load_jsonl(settings.transfer, task.num_labels, task.is_pair,
                              require_label=False)
    except DataFormatError as e:
        raise DataFormatError(f"--transfer: {e}") from None
    if not examples:
        raise ValueError(f"--transfer: {settings.transfer} holds no examples")
    limit = settings.max_transfer_examples
    selection = [limit, settings.seed] if limit is not None and limit < len(examples) else None
    examples = subset(examples, limit, settings.seed)
    missing = sum(e.label is None for e in examples)
    if settings.alpha < 1 and missing:
        raise ValueError(f"--alpha {settings.alpha:g} < 1 weighs the label loss by "
                         f"{1 - settings.alpha:g}, but {missing} of {len(examples)} examples in "
                         f"--transfer {settings.transfer} have no label: use --alpha 1 for an "
                         "unlabelled transfer set")
    return examples, selection


def load_dev(settings: DistillSettings, task: Task) -> list[Example]:
    """The labelled dev examples (--dev-file or the task's dev split), a subset if asked."""
    if settings.dev_file is None:
        return subset(load_split(task, "dev"), settings.max_eval_examples, settings.seed)
    try:
        examples = load_jsonl(settings.dev_file, task.num_labels, task.is_pair)
    except DataFormatError as e:
        raise DataFormatError(f"--dev-file: {e}") from None
    return subset(examples, settings.max_eval_examples, settings.seed)


def dev_overlap(transfer: list[Example], dev: list[Example]) -> int:
    """Transfer examples whose text is a dev example's after data/corpora.py's `normalize` (the
    transfer-set scripts' leakage rule: case, accents, PTB tokenisation and punctuation aside):
    a transfer set must not contain the sentences the student is evaluated on."""
    def norm(e):
        return normalize(e.text_a), normalize(e.text_b or "")
    seen = {norm(e) for e in dev}
    return sum(norm(e) in seen for e in transfer)


# ---- the teacher-logit cache --------------------------------------------------------------------

def vocab_sha256(tokenizer: BertTokenizer) -> str:
    """SHA-256 of the tokens in id order and the options that change how text becomes ids."""
    tokens = sorted(tokenizer.vocab, key=tokenizer.vocab.get)
    options = [tokenizer.lowercase, tokenizer.strip_accents, tokenizer.handle_chinese_chars]
    return hashlib.sha256(json.dumps([tokens, options]).encode("utf-8")).hexdigest()


def teacher_cache_key(teacher_dir, transfer, tokenizer: BertTokenizer, max_seq_length: int,
                      dtype: str, selection=None, truncation: str = "head") -> dict:
    """Everything the teacher's logits on the transfer set depend on (see the module's doc). The
    truncation enters the key when it is not head, so the key of a head run is the one it had
    before --truncation existed: caches and checkpoints written then stay valid."""
    teacher_dir = Path(teacher_dir)
    files = {name: file_sha256(teacher_dir / name) for name in checkpoint_files(teacher_dir)}
    key = {"version": CACHE_VERSION, "teacher": files, "transfer": file_sha256(transfer),
           "vocab": vocab_sha256(tokenizer), "max_seq_length": max_seq_length,
           "dtype": str(np.dtype(dtype)), "examples": selection}
    return key if truncation == "head" else dict(key, truncation=truncation)


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def cache_paths(out, shared=None, key: dict | None = None) -> list[tuple[Path, Path]]:
    """(array, JSON) file pairs where the logits are looked for, in order: beside the run, then in
    the shared directory under the key's digest."""
    pairs = [(Path(out) / f"{CACHE_NAME}.npy", Path(out) / f"{CACHE_NAME}.json")]
    if shared is not None:
        stem = Path(shared) / f"{CACHE_NAME}-{key_digest(key)}"
        pairs.append((stem.with_suffix(".npy"), stem.with_suffix(".json")))
    return pairs


def _array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def read_cached_logits(array_path: Path, json_path: Path, key: dict, shape) -> np.ndarray | None:
    """The cached logits if both files exist, the key is equal and the array is intact."""
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
        if info.get("key") != key:
            return None
        logits = np.load(array_path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if logits.shape != tuple(shape) or _array_sha256(logits) != info.get("sha256"):
        return None
    return logits


def write_cached_logits(array_path: Path, json_path: Path, key: dict, logits: np.ndarray,
                        about: dict) -> None:
    """The array, then the JSON naming its key and checksum (each written atomically)."""
    array_path.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp):
        with open(tmp, "wb") as f:
            np.save(f, logits, allow_pickle=False)
    atomic_write_bytes(array_path, save)
    info = dict(about, key=key, digest=key_digest(key), shape=list(logits.shape),
                sha256=_array_sha256(logits), created=time.time())
    atomic_write_text(json_path, json.dumps(info, indent=1) + "\n")


def teacher_logits(teacher, split: EncodedSplit, pad_id: int, key: dict, out,
                   shared=None, batch_size: int = 64, progress: bool = False,
                   about: dict | None = None) -> tuple[np.ndarray, str]:
    """The teacher's logits on every example of `split`: from the cache when the key matches,
    else computed once (length-sorted batches, progress bar) and stored beside the run and in the
    shared directory. Returns (logits, where they came from: "run", "shared" or "computed")."""
    shape = (len(split.ids), teacher.config.num_labels)
    pairs = cache_paths(out, shared, key)
    for where, (array_path, json_path) in zip(("run", "shared"), pairs):
        logits = read_cached_logits(array_path, json_path, key, shape)
        if logits is not None:
            break
    else:
        where = "computed"
        logits = predict_logits(teacher, split, pad_id, batch_size, progress,
                                desc="teacher logits")
    for i, (array_path, json_path) in enumerate(pairs):
        if where == "computed" or (where == "shared" and i == 0):
            write_cached_logits(array_path, json_path, key, logits, about or {})
    return logits, where


# ---- the distillation run -----------------------------------------------------------------------

class DistillCallbacks(FinetuneCallbacks):
    """Fine-tuning's callbacks (per-epoch dev evaluation, best/, resumable checkpoints) with the
    distillation loss and the student's agreement with the teacher per step."""

    def __init__(self, settings: DistillSettings, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = settings

    def compute_grads(self, model, batch, stats):
        return model.loss_and_grads(**batch, temperature=self.settings.temperature,
                                    alpha=self.settings.alpha, training=True, stats=stats)

    def batch_metrics(self, batch, stats):
        if self.task.is_regression:
            return {}
        agree = stats["logits"].argmax(-1) == batch["teacher_logits"].argmax(-1)
        return {"agreement": float(agree.mean())}


def saved_state(out: Path, key: dict) -> tuple[Path, dict]:
    """The latest checkpoint in `out` and its state, which must have been trained on the teacher
    logits of `key` (checked before the teacher runs, so the run's cache is left intact)."""
    checkpoint, saved = latest_state(out)
    if saved.get("teacher_logits") != key_digest(key):
        raise ValueError(f"--resume: the teacher, the transfer file (or its subset), the "
                         f"vocabulary, --max-seq-length, --truncation or --dtype changed since "
                         f"{checkpoint} was saved")
    return checkpoint, saved


def distill(settings: DistillSettings, resume: bool = False, progress: bool = True,
            log=print) -> dict:
    """Distil the teacher into the student (or resume from the latest checkpoint in
    settings.out); returns the dev metrics before, per epoch and of the best epoch."""
    task = get_task(settings.task)
    main = is_main_process()                     # rank 0 alone writes (and logs)
    out = (prepare_output_dir(settings.out, resume, settings.overwrite,
                              keep=(f"{CACHE_NAME}.npy", f"{CACHE_NAME}.json")) if main
           else Path(settings.out))
    log = log if main else (lambda message: None)
    dtype = np.dtype(settings.dtype)
    teacher, tokenizer = load_teacher(settings, task)
    check_student_vocabulary(settings.student, tokenizer)
    transfer_examples, selection = load_transfer(settings, task)
    dev_examples = load_dev(settings, task)
    overlap = dev_overlap(transfer_examples, dev_examples)
    if overlap:
        log(f"warning: {overlap} transfer examples are also dev examples ({settings.transfer})")
    transfer = encode_examples(transfer_examples, tokenizer, settings.max_seq_length,
                               settings.truncation)
    dev = encode_examples(dev_examples, tokenizer, settings.max_seq_length, settings.truncation)

    key = teacher_cache_key(settings.teacher, settings.transfer, tokenizer,
                            settings.max_seq_length, settings.dtype, selection,
                            settings.truncation)
    checkpoint, saved = saved_state(out, key) if resume else (None, None)
    targets = source = None
    if main:                                     # the other ranks receive rank 0's logits
        targets, source = teacher_logits(
            teacher, transfer, tokenizer.pad_id, key, out, settings.teacher_cache,
            settings.eval_batch_size, progress,
            about={"teacher": str(settings.teacher), "transfer": str(settings.transfer)})
    targets, source = world().allgather((targets, source))[0]
    log(f"teacher logits on {len(targets)} transfer examples: {source}")

    model = load_classifier(settings.student, task.num_labels, tokenizer.vocab_size,
                            settings.seed, dtype, settings.max_seq_length, label_map(task),
                            settings.dropout)
    warmup, total = warmup_and_total_steps(len(transfer.ids), settings.batch_size,
                                           settings.epochs, settings.warmup_ratio)
    optimizer = AdamW(model.params, lr=settings.lr, weight_decay=settings.weight_decay,
                      schedule=lambda k: linear_warmup_decay(k, warmup, total))
    inputs = input_digests(settings, INPUT_FILES)
    state = resume_state(settings, model, optimizer, inputs, INPUT_FILES) if resume else None
    jsonl = open_log(out, saved)
    run_state = {"settings": asdict(settings), "inputs": inputs,
                 "teacher_logits": key_digest(key)}
    callbacks = DistillCallbacks(settings, task, model, dev, tokenizer.pad_id, out,
                                 settings.eval_batch_size, jsonl, progress, log, tokenizer,
                                 optimizer=optimizer, run_state=run_state)
    if state is not None:
        callbacks.restore(checkpoint, saved)
    elif main:
        teacher_dev = evaluate_classifier(teacher, dev, task, tokenizer.pad_id,
                                          settings.eval_batch_size, progress)
        jsonl.write({"kind": "start", "step": 0, "settings": asdict(settings),
                     "transfer_examples": len(transfer.ids), "dev_examples": len(dev.ids),
                     "transfer_dev_overlap": overlap, "teacher_logits": source,
                     "parameters": model.num_parameters(),
                     "teacher_parameters": teacher.num_parameters(), "teacher_dev": teacher_dev})
        log(f"teacher on dev: {format_metrics(teacher_dev)}")
        before = evaluate_classifier(model, dev, task, tokenizer.pad_id,
                                     settings.eval_batch_size, progress)
        jsonl.write({"kind": "eval", "step": 0, "epoch": 0, **before})
        log(f"student on dev before distillation: {format_metrics(before)}")
    del teacher                                  # only its logits are needed from here on

    lengths = [len(x) for x in transfer.ids]
    labelled = settings.alpha < 1

    def epoch_batches(epoch: int, start: int):
        order = training_batches(lengths, settings.batch_size, settings.seed, epoch)
        for rows in order[start:]:
            batch = pad_batch(transfer, rows, tokenizer.pad_id, dtype,
                              task.is_regression or not labelled)
            if not labelled:
                batch.pop("labels")              # NaN (kept as floats): unlabelled rows
            batch["teacher_logits"] = targets[rows]
            yield batch

    result = run_loop(model, optimizer, epoch_batches, epoch_loop_settings(settings), jsonl,
                      state or LoopState(epoch=1), callbacks, progress,
                      desc=f"distill {task.name}", total_steps=total)
    summary = dict(run_summary(result, settings.max_minutes, log), teacher_logits=source)
    if not main:
        return dict(summary, teacher=None, before=None, epochs=[], best=None)
    if not result.out_of_time:
        save_model_directory(out / "final", model, tokenizer)
    records = jsonl.records()
    plot_training_curves(records, out / "curves.png",
                         f"distilling {settings.teacher} into {settings.student} "
                         f"({task.name}, T={settings.temperature:g}, alpha={settings.alpha:g})",
                         train_keys=("loss",) + (() if task.is_regression else ("agreement",)),
                         eval_keys=tuple(task.metrics))
    start = next(r for r in records if r["kind"] == "start")
    return {"teacher": start["teacher_dev"], "before": metrics_before(records, task),
            "epochs": callbacks.history, "best": callbacks.best, **summary}
