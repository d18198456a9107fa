"""Pretraining with MLM + NSP from raw text: `bert-np pretrain`.

text files -> tokenizer -> PretrainingDataset (pairs, fresh masks each epoch) -> BertForPreTraining
-> loss_and_grads -> clip -> AdamW with warmup + linear decay. Every `checkpoint_every` steps the
model, AdamW, the dropout generator and the data position are saved (bert_np.train), so
`resume=True` continues exactly where the run stopped: the same batches, the same dropout masks, the
same losses, bit for bit.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import BertConfig
from .data.pretraining import PretrainingDataset
from .models import BertForPreTraining
from .optim import AdamW, linear_warmup_decay
from .plots import plot_training_curves
from .tokenization import BertTokenizer
from .train import (JsonlLog, NonFiniteLossError, latest_checkpoint, load_training_checkpoint,
                    save_training_checkpoint, train_step)


@dataclass
class PretrainSettings:
    corpus: list[str]
    vocab: str
    out: str
    config: str = "tiny"                 # a preset name or a config.json path
    eval_corpus: list[str] = field(default_factory=list)
    steps: int = 1000
    batch_size: int = 32
    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    whole_word_masking: bool = False
    new_pairs_each_epoch: bool = False   # rebuild the NSP pairs every epoch (small corpora)
    lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    lowercase: bool = True
    seed: int = 0
    dtype: str = "float32"
    checkpoint_every: int = 200
    eval_every: int = 200
    eval_batches: int = 20
    log_every: int = 1
    max_minutes: float | None = None     # stop (with a checkpoint) after this wall time

    def __post_init__(self):
        for name in ("steps", "batch_size", "max_seq_length", "checkpoint_every", "eval_every",
                     "eval_batches", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.corpus:
            raise ValueError("at least one corpus file is needed")
        for path in list(self.corpus) + list(self.eval_corpus) + [self.vocab]:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no such file: {path}")


def build_config(spec: str, vocab_size: int, max_seq_length: int) -> BertConfig:
    """A preset name or a config.json path, with the tokenizer's vocabulary size."""
    if Path(spec).is_file():
        cfg = BertConfig.from_json_file(spec)
        if cfg.vocab_size != vocab_size:
            raise ValueError(f"{spec} has vocab_size {cfg.vocab_size}, the vocabulary has {vocab_size}")
    else:
        cfg = BertConfig.preset(spec, vocab_size=vocab_size)
    if max_seq_length > cfg.max_position_embeddings:
        raise ValueError(f"max_seq_length {max_seq_length} exceeds the model's "
                         f"max_position_embeddings {cfg.max_position_embeddings}")
    return cfg


def evaluate(model: BertForPreTraining, batches) -> dict:
    """Mean loss, MLM accuracy and NSP accuracy over held-out batches."""
    losses, totals = [], {}
    for batch in batches:
        loss, stats = model.evaluate(**batch)
        losses.append(loss)
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
    return {"loss": float(np.mean(losses)),
            "mlm_acc": totals["mlm_correct"] / max(1, totals["mlm_total"]),
            "nsp_acc": totals["nsp_correct"] / max(1, totals["nsp_total"])}


def pretrain(settings: PretrainSettings, resume: bool = False, progress: bool = True) -> dict:
    """Run (or resume) pretraining; returns the last held-out evaluation and throughput."""
    from tqdm.auto import tqdm

    s = settings
    out = Path(s.out)
    tokenizer = BertTokenizer.from_vocab(s.vocab, lowercase=s.lowercase)
    data_options = dict(max_seq_length=s.max_seq_length, batch_size=s.batch_size,
                        max_predictions_per_seq=s.max_predictions_per_seq,
                        whole_word_masking=s.whole_word_masking)
    train_data = PretrainingDataset.from_files(s.corpus, tokenizer, seed=s.seed,
                                               new_pairs_each_epoch=s.new_pairs_each_epoch,
                                               **data_options)
    eval_data = (PretrainingDataset.from_files(s.eval_corpus, tokenizer, seed=s.seed + 1,
                                               **data_options) if s.eval_corpus else None)
    eval_batches = ([] if eval_data is None else
                    [b for _, b in zip(range(s.eval_batches), eval_data.batches(0))])
    cfg = build_config(s.config, tokenizer.vocab_size, s.max_seq_length)
    model = BertForPreTraining(cfg, seed=s.seed, dtype=np.dtype(s.dtype))
    optimizer = AdamW(model.params, lr=s.lr, weight_decay=s.weight_decay,
                      schedule=lambda k: linear_warmup_decay(k, s.warmup_steps, s.steps))

    step, epoch, batch_in_epoch = 0, 0, 0
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {out}")
    if checkpoint is not None:
        state = load_training_checkpoint(checkpoint, model, optimizer)
        now = json.loads(json.dumps(asdict(s)))  # as JSON stores it (tuples become lists)
        changed = sorted(k for k in now if k != "max_minutes" and state["settings"].get(k) != now[k])
        if changed:
            raise ValueError(f"resume with settings that differ from {checkpoint}: {changed}")
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
    log = JsonlLog(out / "log.jsonl", truncate_after_step=step if checkpoint else None)
    if checkpoint is None:
        log.write({"kind": "start", "step": 0, "config": cfg.to_dict(),
                   "parameters": model.num_parameters(), "settings": asdict(s)})
        if eval_batches:
            log.write({"kind": "eval", "step": 0, **evaluate(model, eval_batches)})

    def save(name):
        state = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                 "settings": asdict(s)}
        return save_training_checkpoint(out, name, model, optimizer, state, tokenizer)

    started, tokens_seen, tokens_per_s = time.perf_counter(), 0, 0.0
    bar = tqdm(total=s.steps, initial=step, desc="pretrain", disable=not progress, unit="step")
    batches = train_data.batches(epoch, batch_in_epoch)
    while step < s.steps:
        batch = next(batches, None)
        if batch is None:  # end of the epoch: fresh shuffle and masks
            epoch, batch_in_epoch = epoch + 1, 0
            batches = train_data.batches(epoch)
            continue
        stats = {}
        lr = optimizer.current_lr()
        try:
            loss, grad_norm = train_step(model, optimizer, batch, s.max_grad_norm, step + 1, stats)
        except NonFiniteLossError as e:
            last = latest_checkpoint(out)
            raise NonFiniteLossError(f"{e}; training stopped, the last good checkpoint is "
                                     f"{last or 'none (no checkpoint was saved yet)'}") from None
        step, batch_in_epoch = step + 1, batch_in_epoch + 1
        tokens_seen += int(batch["attention_mask"].sum())
        tokens_per_s = tokens_seen / (time.perf_counter() - started)
        record = {"kind": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                  "mlm_acc": stats["mlm_correct"] / max(1, stats["mlm_total"]),
                  "nsp_acc": stats["nsp_correct"] / max(1, stats["nsp_total"]),
                  "tokens_per_s": tokens_per_s}
        if step % s.log_every == 0:
            log.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", mlm=f"{record['mlm_acc']:.3f}",
                        nsp=f"{record['nsp_acc']:.2f}", tok_s=f"{tokens_per_s:.0f}")
        out_of_time = (s.max_minutes is not None
                       and time.perf_counter() - started > 60 * s.max_minutes)
        if eval_batches and (step % s.eval_every == 0 or step == s.steps or out_of_time):
            log.write({"kind": "eval", "step": step, **evaluate(model, eval_batches)})
        if step % s.checkpoint_every == 0 or step == s.steps or out_of_time:
            save(f"step-{step}")
        if out_of_time:
            break
    bar.close()
    model.save_pretrained(out / "final")
    tokenizer.save(out / "final")
    records = log.records()
    plot_training_curves(records, out / "curves.png", f"pretraining {s.config}",
                         train_keys=("loss", "mlm_acc", "nsp_acc"),
                         eval_keys=("loss", "mlm_acc", "nsp_acc"))
    evals = [r for r in records if r["kind"] == "eval"]
    return {"step": step, "first_eval": evals[0] if evals else None,
            "last_eval": evals[-1] if evals else None, "tokens_per_s": tokens_per_s}
