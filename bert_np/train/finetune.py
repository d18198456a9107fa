"""Fine-tuning a sequence classifier: `bert-np finetune`, `evaluate`, `predict` and the demo.

examples -> tokenizer (cut to max_seq_length: the head, or head + tail) -> length-bucketed
batches (data/batching.py)
-> the training loop (loop.py: the classifier's loss_and_grads -> clip -> AdamW with warmup +
linear decay) -> evaluation on dev after every epoch -> the best checkpoint (by the task's main
metric) kept in Hugging Face format with its vocab.txt and the task's label names.
Every `checkpoint_every` steps (and on --max-steps and --max-minutes) a training checkpoint
<out>/step-N is saved (checkpoints.py), so `resume=True` (`--resume`) continues the run where it
stopped, bit for bit: the same batches, dropout masks, evaluations and best/. A checkpoint resumes
only the run that wrote it: the settings, the model's config.json, the data files and the encoded
examples must be the same (pretrain.resume_state).
Under `mpirun -n N` every rank trains on its shard of each batch (parallel.py); rank 0 alone
evaluates and writes best/, the log and the plot.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import paths
from ..config import PRESETS, BertConfig
from ..data.batching import EncodedSplit, bucketed_batches, length_sorted_batches, pad_batch
from ..data.tasks import TASKS, Example, Task, get_task, load_jsonl, load_split
from ..models import BertForSequenceClassification
from ..optim import AdamW, linear_warmup_decay
from ..tokenization import TRUNCATIONS, BertTokenizer
from .checkpoints import (JsonlLog, latest_checkpoint, latest_state, prepare_output_dir,
                          save_model_directory, save_training_checkpoint)
from .loop import Callbacks, LoopSettings, LoopState, run_loop
from .parallel import NullLog, is_main_process
from .metrics import compute_metrics, format_metrics
from .plots import plot_training_curves
from .pretrain import input_digests, resume_state
from .progress import progress_bar
from .settings import check_dropout, check_number, check_positive, setting

# (standard vocabulary, lower-case the text) for a model without a vocabulary of its own. Chinese
# is lower-cased too: bert-base-chinese's vocab.txt holds no upper-case letter (Google trained it
# lower-cased, chinese_L-12_H-768_A-12 is among the "lower_models" of its tokenization.py), so kept
# capitals turn "NBA" or "iPhone" into [UNK]. (Its Hugging Face tokenizer_config.json says
# do_lower_case false: a model directory that ships one is read as it says.)
VOCAB_BY_LANGUAGE = {"en": ("bert-base-uncased", True), "zh": ("bert-base-chinese", True)}
TRUNCATION_HELP = ("which tokens of a longer text are kept: head (the first ones) or head_tail "
                   "(the first 128/510 of them and the last ones: 128 + 382 at max_seq_length "
                   "512, 64 + 190 at 256; for long documents such as IMDB reviews)")


@dataclass
class FinetuneSettings:
    task: str = setting(help="the task", choices=tuple(TASKS))
    model: str = setting(help="a Hugging Face model directory, or a preset name "
                              f"({' '.join(PRESETS)}) to start from random weights")
    out: str = setting(help="output directory: best/ (the best epoch's model, vocab.txt and "
                            "label names), log.jsonl, curves.png")
    epochs: int = setting(3, help="passes over the training examples")
    lr: float = setting(5e-5, help="peak learning rate of AdamW")
    batch_size: int = setting(32, help="examples per optimizer step: the global batch, split "
                                       "between the MPI ranks and the micro-batches")
    gradient_accumulation_steps: int = setting(1, help="micro-batches per step (and rank): the "
                                               "same update as one batch, in less memory")
    max_seq_length: int = setting(128, help="tokens per example, [CLS] and [SEP] included; longer "
                                            "texts are truncated")
    truncation: str = setting("head", choices=TRUNCATIONS, help=TRUNCATION_HELP)
    warmup_ratio: float = setting(0.1, help="fraction of all steps spent warming the learning rate "
                                            "up, before its linear decay to 0")
    weight_decay: float = setting(0.01, help="AdamW's decoupled weight decay (not on biases and "
                                             "LayerNorm)")
    max_grad_norm: float | None = setting(1.0, help="clip the global gradient norm to this "
                                                    "(> 0; none: no clipping)")
    seed: int = setting(0, help="seed of the new head's weights, the data order and dropout")
    dtype: str = setting("float32", choices=("float32", "float64"),
                         help="float32 for speed, float64 for checks")
    dropout: float | None = setting(None, help="hidden, attention and classifier dropout "
                                               "probability instead of the config's (0: off, for "
                                               "exact comparisons)")
    max_steps: int | None = setting(None, help="stop after this many steps (the schedule still "
                                               "spans the epochs; an unfinished epoch is not "
                                               "evaluated); unset: all epochs")
    max_train_examples: int | None = setting(None, help="train on a seeded random subset of this "
                                                        "many examples; unset: all")
    max_eval_examples: int | None = setting(None, help="evaluate on a seeded random subset of "
                                                       "this many examples; unset: all")
    train_file: str | None = setting(None, help="a JSONL file instead of the task's train split")
    dev_file: str | None = setting(None, help="a JSONL file instead of the task's dev split")
    vocab: str | None = setting(None, help="a vocab.txt to use instead of the model directory's; "
                                           "unset: the model's, else the standard vocabulary of "
                                           "the task's language")
    eval_batch_size: int = setting(64, help="examples per evaluation batch")
    checkpoint_every: int | None = setting(500, help="save a resumable checkpoint (step-N/, the "
                                                     "newest two kept) every this many steps, and "
                                                     "on --max-steps and --max-minutes; none: no "
                                                     "checkpoints (nothing to --resume from)")
    max_minutes: float | None = setting(None, help="stop, with a checkpoint, after this many "
                                                   "minutes (continue with --resume); unset: no "
                                                   "time limit")
    overwrite: bool = setting(False, help="clear a non-empty --out first (without it or "
                                          "--resume, a non-empty --out is refused)")

    def __post_init__(self):
        check_training_settings(self)
        check_number(self, "max_train_examples", integer=True, minimum=1, optional=True,
                     none_means="uses every example")
        check_model_spec(self.model)


def check_truncation(truncation: str) -> None:
    """Refuse a truncation other than head and head_tail, naming the option."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation (--truncation) must be one of {', '.join(TRUNCATIONS)}, "
                         f"got {truncation!r}")


def check_training_settings(settings) -> None:
    """The checks of the settings fine-tuning shares with distillation (DistillSettings declares
    them with setting_like): task, batch sizes, lengths, truncation, optimizer numbers, dropout,
    max_steps, max_eval_examples, checkpoint_every, max_minutes. Each raises ValueError naming the
    field and its flag."""
    check_positive(settings, ("epochs", "batch_size", "eval_batch_size",
                              "gradient_accumulation_steps"))
    check_truncation(settings.truncation)
    check_dropout(settings.dropout)
    if isinstance(settings.task, str) and settings.task not in TASKS:
        raise ValueError(f"task (--task) {settings.task!r} is not one of {', '.join(TASKS)}")
    # room for [CLS] text [SEP] (and text_b [SEP] in a pair task): less trains on nothing
    task = TASKS.get(settings.task) if isinstance(settings.task, str) else settings.task
    check_number(settings, "max_seq_length", integer=True,
                 minimum=5 if task is not None and task.is_pair else 3)
    check_number(settings, "lr", above=0)
    check_number(settings, "warmup_ratio", minimum=0, below=1)
    check_number(settings, "weight_decay", minimum=0)
    check_number(settings, "max_grad_norm", above=0, optional=True, none_means="clips nothing")
    check_number(settings, "seed", integer=True, minimum=0)
    check_number(settings, "max_steps", integer=True, minimum=1, optional=True,
                 none_means="trains all epochs")
    check_number(settings, "max_eval_examples", integer=True, minimum=1, optional=True,
                 none_means="uses every example")
    check_number(settings, "checkpoint_every", integer=True, minimum=1, optional=True,
                 none_means="saves no checkpoint")
    check_number(settings, "max_minutes", above=0, optional=True, none_means="has no time limit")


# ---- tokenizer, model and data ------------------------------------------------------------------

def check_model_spec(model: str) -> None:
    """A model is an existing directory or a preset name; anything else is most likely a mistyped
    path, and the message says so."""
    if not Path(model).is_dir() and model not in PRESETS:
        raise FileNotFoundError(f"no such model directory: {model} (and not a preset: "
                                f"{', '.join(PRESETS)})")


def load_tokenizer(model: str, language: str, vocab: str | None = None) -> BertTokenizer:
    """The model directory's vocab.txt, else `vocab`, else the standard vocab of the language."""
    if vocab is not None:
        lowercase = VOCAB_BY_LANGUAGE[language][1]
        return BertTokenizer.from_vocab(vocab, lowercase=lowercase)
    if (Path(model) / "vocab.txt").is_file():
        return BertTokenizer.from_pretrained(model)
    name, lowercase = VOCAB_BY_LANGUAGE[language]
    return BertTokenizer.from_vocab(paths.data_dir() / "vocab" / name / "vocab.txt",
                                    lowercase=lowercase)


def label_map(task: Task) -> dict[int, str] | None:
    """{class id: name} of a task, for the saved config's id2label (None: no names, LABEL_i)."""
    return dict(enumerate(task.label_names)) or None


def load_classifier(model: str, num_labels: int, vocab_size: int, seed: int, dtype,
                    max_seq_length: int, id2label: dict | None = None,
                    dropout: float | None = None) -> BertForSequenceClassification:
    """From a Hugging Face directory (a new head if it has none), or a preset initialised afresh;
    `dropout` replaces the config's hidden, attention and classifier dropout."""
    check_model_spec(model)
    if Path(model).is_dir():
        names = {} if id2label is None else {"id2label": id2label}
        clf = BertForSequenceClassification.from_pretrained(model, dtype=dtype, seed=seed,
                                                            num_labels=num_labels, **names)
    else:
        cfg = BertConfig.preset(model, vocab_size=vocab_size, num_labels=num_labels,
                                id2label=id2label)
        clf = BertForSequenceClassification(cfg, seed=seed, dtype=dtype)
    if clf.config.vocab_size < vocab_size:
        raise ValueError(f"the tokenizer has {vocab_size} tokens, the model only {clf.config.vocab_size}")
    if max_seq_length > clf.config.max_position_embeddings:
        raise ValueError(f"max_seq_length {max_seq_length} exceeds the model's "
                         f"max_position_embeddings {clf.config.max_position_embeddings}")
    if dropout is not None:
        clf.config = dataclasses.replace(
            clf.config, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            classifier_dropout=None if clf.config.classifier_dropout is None else dropout)
    return clf


def encode_examples(examples: list[Example], tokenizer: BertTokenizer, max_length: int,
                    truncation: str = "head") -> EncodedSplit:
    """Token ids (unpadded) and labels of examples; float labels for both kinds of task (NaN marks
    an unlabelled row), which pad_batch casts to class ids for classification. Texts longer than
    max_length keep their head or their head and tail (`truncation`, see BertTokenizer.encode)."""
    check_truncation(truncation)
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    encodings = tokenizer.encode_many(texts_a, texts_b, max_length=max_length,
                                      truncation=truncation)
    labels = np.array([np.nan if e.label is None else e.label for e in examples], dtype=np.float64)
    return EncodedSplit([e.input_ids for e in encodings], [e.token_type_ids for e in encodings], labels)


def predict_logits(model: BertForSequenceClassification, split: EncodedSplit, pad_id: int,
                   batch_size: int = 64, progress: bool = False,
                   desc: str = "evaluate") -> np.ndarray:
    """Logits of every example, batched by length (sorted), returned in the original order;
    `desc` labels the progress bar."""
    logits = np.zeros((len(split.ids), model.config.num_labels), dtype=model.dtype)
    batches = length_sorted_batches([len(x) for x in split.ids], batch_size)
    for rows in progress_bar(batches, desc=desc, enabled=progress, leave=False, unit="batch"):
        batch = pad_batch(split, rows, pad_id, model.dtype, regression=True)  # labels stay float
        batch.pop("labels")                    # (NaN for unlabelled rows) and are not used here
        logits[rows] = model.forward(**batch)["logits"]
    return logits


def check_labels_match(model, task: Task, where="the model") -> None:
    """Refuse a classifier whose number of labels is not the task's, or whose label names are
    those of another registered task (an SST-2 model scored on MRPC): its scores would mean
    nothing. Other names (LABEL_0, a checkpoint's own) are accepted."""
    if model.config.num_labels != task.num_labels:
        raise ValueError(f"{where} has {model.config.num_labels} labels, task {task.name} has "
                         f"{task.num_labels}: it was not fine-tuned on this task")
    fitted = tasks_with_labels_of(model)
    if fitted and task not in fitted:
        raise ValueError(f"{where} has the labels of {', '.join(t.name for t in fitted)} "
                         f"({', '.join(fitted[0].label_names)}), not those of {task.name} "
                         f"({', '.join(task.label_names)}): it was not fine-tuned on this task")


def tasks_with_labels_of(model) -> list[Task]:
    """The registered tasks whose label names are the model's saved ones: what it was fine-tuned
    for, as far as its config tells (none for LABEL_0, ... or a checkpoint's own names)."""
    id2label = model.config.id2label or {}
    names = tuple(id2label.get(i) for i in range(model.config.num_labels))
    return [t for t in TASKS.values() if t.label_names and t.label_names == names]


def evaluate_classifier(model, split: EncodedSplit, task, pad_id: int, batch_size=64,
                        progress=False) -> dict:
    """The task's metrics of a classifier on an encoded split (every example labelled), with
    compute_metrics's "constant_prediction" flag when it gives every example one class."""
    check_labels_match(model, task)
    if np.isnan(split.labels).any():
        raise ValueError("cannot score unlabelled examples; use predict_texts to classify them")
    return compute_metrics(task, predict_logits(model, split, pad_id, batch_size, progress),
                           split.labels)


def training_batches(lengths: list[int], batch_size: int, seed: int,
                     epoch: int) -> list[np.ndarray]:
    """The rows of every batch of epoch `epoch` (1, 2, ...) in training order: length-bucketed,
    shuffled by the generator of (seed, epoch). bench/finetune_compare.py feeds PyTorch these."""
    return bucketed_batches(lengths, batch_size, np.random.default_rng([seed, epoch]))


def warmup_and_total_steps(num_examples: int, batch_size: int, epochs: int,
                           warmup_ratio: float) -> tuple[int, int]:
    """Steps of the learning-rate warmup and of the whole run (one step per batch)."""
    total = -(-num_examples // batch_size) * epochs
    return int(warmup_ratio * total), total


def subset(examples: list, limit: int | None, seed: int) -> list:
    """A seeded random subset of `limit` examples in their original order (all if limit is None)."""
    if limit is None or limit >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), limit, replace=False))
    return [examples[i] for i in keep]


def load_examples(settings: FinetuneSettings, task: Task, train_examples=None,
                  dev_examples=None) -> tuple[list[Example], list[Example]]:
    """Training and dev examples: given, from --train-file/--dev-file, or the task's splits."""
    if train_examples is None:
        train_examples = (load_jsonl(settings.train_file, task.num_labels, task.is_pair)
                          if settings.train_file else load_split(task, "train"))
    if dev_examples is None:
        dev_examples = (load_jsonl(settings.dev_file, task.num_labels, task.is_pair)
                        if settings.dev_file else load_split(task, "dev"))
    for split, examples, file in (("training", train_examples, settings.train_file),
                                  ("dev", dev_examples, settings.dev_file)):
        if not examples:  # training on nothing would save an untrained model as best/
            raise ValueError(f"no {split} examples" + (f" in {file}" if file else ""))
    return (subset(train_examples, settings.max_train_examples, settings.seed),
            subset(dev_examples, settings.max_eval_examples, settings.seed))


# ---- the fine-tuning run ------------------------------------------------------------------------

# compared by content on resume: the model directory by its config.json (its weights are replaced
# by the checkpoint's), the files by their bytes; besides them the encoded examples
INPUT_FILES = ("model", "train_file", "dev_file", "vocab")


class FinetuneCallbacks(Callbacks):
    """Per-step accuracy; after every epoch: dev metrics, and best/ when they improve; resumable
    checkpoints holding, besides the loop state, `run_state` (the settings and input digests
    that define the run), the best epoch, the dev history and the number of log records written
    until then. Distillation (distill.py) trains with these callbacks too."""

    def __init__(self, task: Task, model, dev: EncodedSplit, pad_id: int, out: Path,
                 eval_batch_size: int, jsonl: JsonlLog, progress: bool, log, tokenizer=None,
                 on_eval=None, optimizer=None, run_state: dict | None = None):
        self.task, self.model, self.dev, self.pad_id, self.out = task, model, dev, pad_id, out
        self.tokenizer = tokenizer  # saved with the model in best/
        self.on_eval = on_eval      # called with (epoch, model, dev metrics) after each evaluation
        self.eval_batch_size, self.jsonl, self.progress, self.log = (eval_batch_size, jsonl,
                                                                     progress, log)
        self.optimizer, self.run_state = optimizer, run_state or {}  # saved in checkpoints
        self.history, self.best = [], None
        self.eval_seconds = 0.0  # in end_of_epoch: evaluation, on_eval and saving best/

    def batch_metrics(self, batch, stats):
        if self.task.is_regression:
            return {}
        return {"accuracy": float((stats["logits"].argmax(-1) == batch["labels"]).mean())}

    def end_of_epoch(self, state):
        if not is_main_process():
            return
        started = time.perf_counter()
        self._evaluate_and_keep_best(state)
        self.eval_seconds += time.perf_counter() - started

    def _evaluate_and_keep_best(self, state):
        metrics = evaluate_classifier(self.model, self.dev, self.task, self.pad_id,
                                      self.eval_batch_size, self.progress)
        self.jsonl.write({"kind": "eval", "step": state.step, "epoch": state.epoch, **metrics})
        self.history.append(metrics)
        self.log(f"epoch {state.epoch}: dev {format_metrics(metrics)}")
        main = self.task.main_metric
        if self.best is None or metrics[main] > self.best[main]:
            self.best = dict(metrics, epoch=state.epoch)
            save_model_directory(self.out / "best", self.model, self.tokenizer)
        if self.on_eval is not None:
            self.on_eval(state.epoch, self.model, metrics)

    def save_checkpoint(self, state):
        if not is_main_process():
            return
        saved = dict(asdict(state), **self.run_state, best=self.best, history=self.history,
                     log_records=len(self.jsonl.records()))
        save_training_checkpoint(self.out, f"step-{state.step}", self.model, self.optimizer,
                                 saved, self.tokenizer)

    def restore(self, checkpoint: Path, saved: dict) -> None:
        """Continue after `checkpoint` (its state `saved`): the best epoch and the dev history as
        of then."""
        self.best, self.history = saved["best"], list(saved["history"])
        self.log(f"resuming from {checkpoint} (step {saved['step']})")

    def last_good_checkpoint(self):
        kept = self.out / "best" if self.best else "none (no epoch finished yet)"
        last = latest_checkpoint(self.out)
        return (f"the best checkpoint so far is {kept}; the last resumable checkpoint is "
                f"{last or 'none (none saved yet)'}")


def examples_digest(*splits: EncodedSplit) -> str:
    """SHA-256 of encoded examples as the model reads them, every token id, token type and label:
    what the data files (or the task's splits), the vocabulary, max_seq_length and truncation
    made of the examples."""
    h = hashlib.sha256()
    for split in splits:
        h.update(np.asarray([len(x) for x in split.ids], np.int64).tobytes())
        for ids, types in zip(split.ids, split.types):
            h.update(np.asarray(ids, np.int64).tobytes() + np.asarray(types, np.int64).tobytes())
        h.update(np.asarray(split.labels, np.float64).tobytes())
    return h.hexdigest()


def open_log(out: Path, saved: dict | None):
    """Rank 0's log.jsonl: a new one, or, resuming from a checkpoint whose state is `saved`, the
    records written before that checkpoint; the other ranks write none."""
    if not is_main_process():
        return NullLog()
    return JsonlLog(out / "log.jsonl", keep_records=None if saved is None else saved["log_records"])


def epoch_loop_settings(settings) -> LoopSettings:
    """The loop of finetune and distill: the epochs of `settings`, the epoch in every train record,
    a checkpoint every settings.checkpoint_every steps, the step and time limits."""
    return LoopSettings(max_grad_norm=settings.max_grad_norm, max_steps=settings.max_steps,
                        last_epoch=settings.epochs, log_epoch=True,
                        checkpoint_every=settings.checkpoint_every,
                        max_minutes=settings.max_minutes,
                        gradient_accumulation_steps=settings.gradient_accumulation_steps)


def run_summary(result, max_minutes: float | None, log) -> dict:
    """The step reached, whether --max-minutes stopped the run (then said in the log), the time
    and speed of training."""
    if result.out_of_time:
        log(f"stopped after {max_minutes} minutes at step {result.state.step}; continue with "
            "--resume")
    return {"step": result.state.step, "out_of_time": result.out_of_time,
            "train_seconds": result.seconds,
            "tokens_per_s": result.tokens / result.seconds if result.seconds else 0.0}


def metrics_before(records: list[dict], task: Task) -> dict:
    """The dev metrics before training, from the log (written by the run, or by the run it
    resumed)."""
    before = next(r for r in records if r["kind"] == "eval" and r.get("epoch") == 0)
    return {k: v for k, v in before.items() if k in task.metrics or k == "constant_prediction"}


def finetune(settings: FinetuneSettings, resume: bool = False, progress: bool = True,
             train_examples=None, dev_examples=None, log=print, on_eval=None) -> dict:
    """Fine-tune and keep the best checkpoint in settings.out/best, or with `resume` continue the
    run from the latest checkpoint in settings.out; returns the dev metrics before, per epoch and
    of the best epoch.

    on_eval(epoch, model, dev_metrics), if given, is called (on rank 0) after each evaluation on
    dev: epoch 0 before training, then every epoch (those of this call when resuming);
    bench/finetune_compare.py reads the initial head there and evaluates another split."""
    task = get_task(settings.task)
    main = is_main_process()
    out = (prepare_output_dir(settings.out, resume, settings.overwrite) if main
           else Path(settings.out))      # only rank 0 writes
    checkpoint, saved = latest_state(out) if resume else (None, None)  # before reading the data
    train_examples, dev_examples = load_examples(settings, task, train_examples, dev_examples)
    tokenizer = load_tokenizer(settings.model, task.language, settings.vocab)
    dtype = np.dtype(settings.dtype)
    model = load_classifier(settings.model, task.num_labels, tokenizer.vocab_size, settings.seed,
                            dtype, settings.max_seq_length, label_map(task), settings.dropout)
    train = encode_examples(train_examples, tokenizer, settings.max_seq_length, settings.truncation)
    dev = encode_examples(dev_examples, tokenizer, settings.max_seq_length, settings.truncation)
    warmup, total = warmup_and_total_steps(len(train.ids), settings.batch_size, settings.epochs,
                                           settings.warmup_ratio)
    optimizer = AdamW(model.params, lr=settings.lr, weight_decay=settings.weight_decay,
                      schedule=lambda k: linear_warmup_decay(k, warmup, total))
    inputs = dict(input_digests(settings, INPUT_FILES), examples=examples_digest(train, dev))
    state = resume_state(settings, model, optimizer, inputs, INPUT_FILES) if resume else None
    jsonl = open_log(out, saved)
    callbacks = FinetuneCallbacks(task, model, dev, tokenizer.pad_id, out,
                                  settings.eval_batch_size, jsonl, progress, log, tokenizer,
                                  on_eval, optimizer, {"settings": asdict(settings),
                                                       "inputs": inputs})
    if state is not None:
        callbacks.restore(checkpoint, saved)
    elif main:
        jsonl.write({"kind": "start", "step": 0, "settings": asdict(settings),
                     "train_examples": len(train.ids), "dev_examples": len(dev.ids),
                     "parameters": model.num_parameters()})
        before = evaluate_classifier(model, dev, task, tokenizer.pad_id, settings.eval_batch_size,
                                     progress)
        jsonl.write({"kind": "eval", "step": 0, "epoch": 0, **before})
        log(f"dev before fine-tuning: {format_metrics(before)}")
        if on_eval is not None:
            on_eval(0, model, before)

    lengths = [len(x) for x in train.ids]

    def epoch_batches(epoch: int, start: int):
        order = training_batches(lengths, settings.batch_size, settings.seed, epoch)
        return (pad_batch(train, rows, tokenizer.pad_id, dtype, task.is_regression)
                for rows in order[start:])

    result = run_loop(model, optimizer, epoch_batches, epoch_loop_settings(settings), jsonl,
                      state or LoopState(epoch=1), callbacks, progress,
                      desc=f"finetune {task.name}", total_steps=total)
    summary = run_summary(result, settings.max_minutes, log)
    if not main:
        return dict(summary, before=None, epochs=[], best=None)
    records = jsonl.records()
    plot_training_curves(records, out / "curves.png",
                         f"fine-tuning {task.name} from {settings.model}",
                         train_keys=("loss",) + (() if task.is_regression else ("accuracy",)),
                         eval_keys=tuple(task.metrics))
    return {"before": metrics_before(records, task), "epochs": callbacks.history,
            "best": callbacks.best, "eval_seconds": callbacks.eval_seconds, **summary}


# ---- evaluate and predict with a saved model ---------------------------------------------------

def load_for_inference(model_dir: str, dtype="float32"):
    """A fine-tuned classifier (strictly: every weight present) and its tokenizer."""
    model = BertForSequenceClassification.from_pretrained(model_dir, dtype=np.dtype(dtype), strict=True)
    return model, BertTokenizer.from_pretrained(model_dir)


def evaluate_saved_model(model_dir: str, task: str, split: str = "dev", max_seq_length: int = 128,
                         file: str | None = None, progress: bool = True,
                         truncation: str = "head") -> dict:
    """The task's metrics of a saved fine-tuned model on a split (or a JSONL file)."""
    task = get_task(task)
    examples = (load_jsonl(file, task.num_labels, task.is_pair) if file else load_split(task, split))
    if any(e.label is None for e in examples):  # GLUE test sets: scoring them would print 0.0
        raise ValueError(f"the {split} split of {task.name} has no labels, so there is nothing to "
                         "score; use `bert-np predict` to classify its texts")
    model, tokenizer = load_for_inference(model_dir)
    check_labels_match(model, task, model_dir)
    data = encode_examples(examples, tokenizer, max_seq_length, truncation)
    return evaluate_classifier(model, data, task, tokenizer.pad_id, progress=progress)


def predict_texts(model, tokenizer, texts_a: list[str], texts_b: list[str] | None = None,
                  max_seq_length: int = 128, truncation: str = "head") -> np.ndarray:
    """Class probabilities (B, C), or the regression score (B, 1)."""
    examples = [Example(a, None if texts_b is None else texts_b[i], None)
                for i, a in enumerate(texts_a)]
    data = encode_examples(examples, tokenizer, max_seq_length, truncation)
    logits = predict_logits(model, data, tokenizer.pad_id).astype(np.float64)
    if model.config.num_labels == 1:
        return logits
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)
