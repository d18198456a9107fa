"""Fine-tuning a sequence classifier: `bert-np finetune`, `evaluate`, `predict` and the demo.

examples -> tokenizer (truncated to max_seq_length) -> length-bucketed batches -> the classifier's
loss_and_grads -> clip -> AdamW (warmup + linear decay) -> evaluation on dev after every epoch ->
the best checkpoint (by the task's main metric) kept in Hugging Face format with its vocab.txt.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import paths
from .config import BertConfig
from .data.tasks import Example, get_task, load_jsonl, load_split
from .metrics import compute_metrics
from .models import BertForSequenceClassification
from .optim import AdamW, linear_warmup_decay
from .plots import plot_training_curves
from .tokenization import BertTokenizer
from .train import JsonlLog, NonFiniteLossError, train_step

VOCAB_BY_LANGUAGE = {"en": ("bert-base-uncased", True), "zh": ("bert-base-chinese", False)}


@dataclass
class FinetuneSettings:
    task: str
    model: str                          # a Hugging Face directory, or a preset name (random init)
    out: str
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    max_seq_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    max_train_examples: int | None = None   # a seeded random subset of the training split
    max_eval_examples: int | None = None
    train_file: str | None = None       # JSONL files instead of the task's own splits
    dev_file: str | None = None
    vocab: str | None = None            # default: the model directory's, else by language
    eval_batch_size: int = 64

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_seq_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


# ---- tokenizer, model and data ------------------------------------------------------------------

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


def load_classifier(model: str, num_labels: int, vocab_size: int, seed: int, dtype,
                    max_seq_length: int) -> BertForSequenceClassification:
    """From a Hugging Face directory (a new head if it has none), or a preset initialised afresh."""
    if Path(model).is_dir():
        clf = BertForSequenceClassification.from_pretrained(model, dtype=dtype, seed=seed,
                                                            num_labels=num_labels)
    else:
        cfg = BertConfig.preset(model, vocab_size=vocab_size, num_labels=num_labels)
        clf = BertForSequenceClassification(cfg, seed=seed, dtype=dtype)
    if clf.config.vocab_size < vocab_size:
        raise ValueError(f"the tokenizer has {vocab_size} tokens, the model only {clf.config.vocab_size}")
    if max_seq_length > clf.config.max_position_embeddings:
        raise ValueError(f"max_seq_length {max_seq_length} exceeds the model's "
                         f"max_position_embeddings {clf.config.max_position_embeddings}")
    return clf


@dataclass
class EncodedSplit:
    """Token ids of every example (without padding) and the labels."""
    ids: list[list[int]]
    types: list[list[int]]
    labels: np.ndarray


def encode_examples(examples: list[Example], tokenizer: BertTokenizer,
                    max_length: int) -> EncodedSplit:
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    encodings = tokenizer.encode_many(texts_a, texts_b, max_length=max_length)
    # float for both kinds (NaN marks an unlabelled row); pad_batch casts class ids to int
    labels = np.array([np.nan if e.label is None else e.label for e in examples], dtype=np.float64)
    return EncodedSplit([e.input_ids for e in encodings], [e.token_type_ids for e in encodings], labels)


def pad_batch(split: EncodedSplit, rows, pad_id: int, dtype, regression: bool) -> dict:
    """The rows of a split as one padded batch: input_ids, token_type_ids, attention_mask, labels."""
    T = max(len(split.ids[i]) for i in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    types = np.zeros((len(rows), T), dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for r, i in enumerate(rows):
        n = len(split.ids[i])
        ids[r, :n], types[r, :n], mask[r, :n] = split.ids[i], split.types[i], 1
    labels = split.labels[rows]
    labels = labels.astype(dtype) if regression else labels.astype(np.int64)
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels)


def bucketed_batches(lengths: list[int], batch_size: int, rng: np.random.Generator,
                     bucket_factor: int = 50) -> list[np.ndarray]:
    """Shuffle, sort within windows of batch_size * bucket_factor by length, cut into batches and
    shuffle the batches: similar lengths share a batch (little padding), the order stays random."""
    order = rng.permutation(len(lengths))
    window = batch_size * bucket_factor
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def predict_logits(model: BertForSequenceClassification, split: EncodedSplit, pad_id: int,
                   batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Logits of every example, batched by length (sorted), returned in the original order."""
    from tqdm.auto import tqdm
    order = np.argsort([len(x) for x in split.ids], kind="stable")
    logits = np.zeros((len(order), model.config.num_labels), dtype=model.dtype)
    for start in tqdm(range(0, len(order), batch_size), desc="evaluate", disable=not progress,
                      leave=False):
        rows = order[start:start + batch_size]
        batch = pad_batch(split, rows, pad_id, model.dtype, regression=True)  # labels stay float
        batch.pop("labels")                    # (NaN for unlabelled rows) and are not used here
        logits[rows] = model.forward(**batch)["logits"]
    return logits


def evaluate_split(model, split: EncodedSplit, task, pad_id: int, batch_size=64,
                   progress=False) -> dict:
    logits = predict_logits(model, split, pad_id, batch_size, progress)
    return compute_metrics(task, logits, split.labels)


def subset(examples: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), limit, replace=False))
    return [examples[i] for i in keep]


# ---- the fine-tuning run ------------------------------------------------------------------------

def finetune(s: FinetuneSettings, progress: bool = True, train_examples=None, dev_examples=None,
             log=print) -> dict:
    """Fine-tune and keep the best checkpoint in s.out/best; returns the metrics per epoch."""
    from tqdm.auto import tqdm

    task = get_task(s.task)
    regression = task.is_regression
    if train_examples is None:
        train_examples = (load_jsonl(s.train_file, task.num_labels, task.is_pair) if s.train_file
                          else load_split(task, "train"))
    if dev_examples is None:
        dev_examples = (load_jsonl(s.dev_file, task.num_labels, task.is_pair) if s.dev_file
                        else load_split(task, "dev"))
    train_examples = subset(train_examples, s.max_train_examples, s.seed)
    dev_examples = subset(dev_examples, s.max_eval_examples, s.seed)
    tokenizer = load_tokenizer(s.model, task.language, s.vocab)
    dtype = np.dtype(s.dtype)
    model = load_classifier(s.model, task.num_labels, tokenizer.vocab_size, s.seed, dtype,
                            s.max_seq_length)
    train = encode_examples(train_examples, tokenizer, s.max_seq_length)
    dev = encode_examples(dev_examples, tokenizer, s.max_seq_length)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = JsonlLog(out / "log.jsonl")
    jsonl.write({"kind": "start", "step": 0, "settings": asdict(s), "train_examples": len(train.ids),
                 "dev_examples": len(dev.ids), "parameters": model.num_parameters()})

    steps_per_epoch = -(-len(train.ids) // s.batch_size)
    total = steps_per_epoch * s.epochs
    warmup = int(s.warmup_ratio * total)
    optimizer = AdamW(model.params, lr=s.lr, weight_decay=s.weight_decay,
                      schedule=lambda k: linear_warmup_decay(k, warmup, total))
    lengths = [len(x) for x in train.ids]
    history, best, step = [], None, 0
    tokenizer.save(out / "best")
    before = evaluate_split(model, dev, task, tokenizer.pad_id, s.eval_batch_size, progress)
    jsonl.write({"kind": "eval", "step": 0, "epoch": 0, **before})
    log(f"dev before fine-tuning: {_fmt(before)}")
    started, tokens = time.perf_counter(), 0
    for epoch in range(1, s.epochs + 1):
        rng = np.random.default_rng([s.seed, epoch])
        bar = tqdm(bucketed_batches(lengths, s.batch_size, rng), desc=f"epoch {epoch}/{s.epochs}",
                   disable=not progress, unit="batch")
        for rows in bar:
            batch = pad_batch(train, rows, tokenizer.pad_id, dtype, regression)
            stats = {}
            lr = optimizer.current_lr()
            try:
                loss, grad_norm = train_step(model, optimizer, batch, s.max_grad_norm, step + 1, stats)
            except NonFiniteLossError as e:
                kept = out / "best" if best else "none (no epoch finished yet)"
                raise NonFiniteLossError(f"{e}; training stopped, the best checkpoint so far is "
                                         f"{kept}") from None
            step += 1
            tokens += int(batch["attention_mask"].sum())
            record = {"kind": "train", "step": step, "epoch": epoch, "loss": loss, "lr": lr,
                      "grad_norm": grad_norm, "tokens_per_s": tokens / (time.perf_counter() - started)}
            if not regression:
                record["accuracy"] = float((stats["logits"].argmax(-1) == batch["labels"]).mean())
            jsonl.write(record)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
        metrics = evaluate_split(model, dev, task, tokenizer.pad_id, s.eval_batch_size, progress)
        jsonl.write({"kind": "eval", "step": step, "epoch": epoch, **metrics})
        history.append(metrics)
        log(f"epoch {epoch}: dev {_fmt(metrics)}")
        if best is None or metrics[task.main_metric] > best[task.main_metric]:
            best = dict(metrics, epoch=epoch)
            model.save_pretrained(out / "best")
    train_seconds = time.perf_counter() - started
    records = jsonl.records()
    eval_keys = tuple(k for k in task.metrics)
    plot_training_curves(records, out / "curves.png", f"fine-tuning {task.name} from {s.model}",
                         train_keys=("loss",) + (() if regression else ("accuracy",)),
                         eval_keys=eval_keys)
    return {"before": before, "epochs": history, "best": best, "train_seconds": train_seconds,
            "tokens_per_s": tokens / train_seconds if train_seconds else 0.0}


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


# ---- evaluate and predict with a saved model ---------------------------------------------------

def load_for_inference(model_dir: str, dtype="float32"):
    model = BertForSequenceClassification.from_pretrained(model_dir, dtype=np.dtype(dtype), strict=True)
    return model, BertTokenizer.from_pretrained(model_dir)


def evaluate_saved(model_dir: str, task: str, split: str = "dev", max_seq_length: int = 128,
                   file: str | None = None, progress: bool = True) -> dict:
    task = get_task(task)
    model, tokenizer = load_for_inference(model_dir)
    examples = (load_jsonl(file, task.num_labels, task.is_pair) if file else load_split(task, split))
    data = encode_examples(examples, tokenizer, max_seq_length)
    return evaluate_split(model, data, task, tokenizer.pad_id, progress=progress)


def predict_texts(model, tokenizer, texts_a: list[str], texts_b: list[str] | None = None,
                  max_seq_length: int = 128) -> np.ndarray:
    """Class probabilities (B, C), or the regression score (B, 1)."""
    examples = [Example(a, None if texts_b is None else texts_b[i], None)
                for i, a in enumerate(texts_a)]
    data = encode_examples(examples, tokenizer, max_seq_length)
    logits = predict_logits(model, data, tokenizer.pad_id).astype(np.float64)
    if model.config.num_labels == 1:
        return logits
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)
