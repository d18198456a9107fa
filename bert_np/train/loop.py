"""The one training loop: pretraining and fine-tuning are data, a model and callbacks around it.

One step:
    batch -> compute_grads(model, batch, stats) -> (loss, grads)   default: model.loss_and_grads
          -> apply_gradients: clip the global norm, refuse a non-finite loss or norm, AdamW step
          -> a JSONL "train" record and the progress bar
          -> on schedule: evaluate, save a checkpoint; when the data runs out: end_of_epoch
`apply_gradients` is the one place where gradients reach the parameters. Extensions plug in before
it, not into a copy of the loop: distillation puts the teacher's logits into the batch and
overrides `compute_grads` to use them. Data-parallel training (mpirun) and gradient accumulation
wrap whatever `compute_grads` a run has (parallel.py): the loop hands it this rank's micro-batches
of the global batch, each carrying `denominators` and `dropout` for loss_and_grads, sums their
gradients in one buffer and allreduces it, so every run gets them without code of its own. Only
rank 0 writes the log and shows the progress bar; every rank checks the same (allreduced) norm.

Resume: `LoopState` (step, epoch, batch within the epoch) is all the loop needs to continue where it
stopped; the caller saves it in its checkpoint, and `epoch_batches(epoch, start)` must rebuild the
same batches from that position.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from ..optim import AdamW, clip_grad_norm
from .checkpoints import JsonlLog
from .parallel import split_step_grads, world
from .progress import progress_bar


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class LoopState:
    """Where a run is: optimizer steps taken, the current epoch and the batches done in it."""
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


@dataclass
class LoopSettings:
    """When the loop stops, evaluates, saves and logs (None: never, or no limit)."""
    max_grad_norm: float | None
    max_steps: int | None = None        # stop after this many steps in all
    last_epoch: int | None = None       # stop when this epoch's batches are used up
    eval_every: int | None = None       # Callbacks.evaluate every this many steps and at the end
    checkpoint_every: int | None = None  # Callbacks.save_checkpoint likewise
    log_every: int = 1                  # a "train" record every this many steps
    max_minutes: float | None = None    # stop (evaluating and saving first) after this wall time
    log_epoch: bool = False             # put the epoch into every "train" record
    gradient_accumulation_steps: int = 1  # micro-batches per step and rank (parallel.py)


@dataclass
class LoopResult:
    """How a call of run_loop ended."""
    state: LoopState
    tokens: int            # real (unpadded) tokens trained on in this call
    seconds: float         # wall time of this call
    tokens_per_s: float    # as of the last step
    out_of_time: bool


class Callbacks:
    """What a run adds to the loop. Every method has a default, so a run overrides only its own."""

    def compute_grads(self, model, batch: dict, stats: dict) -> tuple[float, dict]:
        """(loss, grads) of one batch; `stats` receives what the model reports (accuracies).

        On several ranks or with gradient accumulation `batch` is a micro-batch that also carries
        `denominators` and `dropout`: pass them on to loss_and_grads (the default does: **batch)."""
        return default_compute_grads(model, batch, stats)

    def batch_metrics(self, batch: dict, stats: dict) -> dict:
        """Extra values of the step's "train" record (and the progress bar), e.g. accuracy."""
        return {}

    def evaluate(self, state: LoopState) -> None:
        """Held-out evaluation on the loop's schedule; writes its own "eval" record."""

    def save_checkpoint(self, state: LoopState) -> None:
        """A resumable checkpoint on the loop's schedule."""

    def end_of_epoch(self, state: LoopState) -> None:
        """Called when the batches of `state.epoch` are used up."""

    def last_good_checkpoint(self) -> str:
        """The end of a NonFiniteLossError's message: where a good model is."""
        return "no checkpoint was saved"


def default_compute_grads(model, batch: dict, stats: dict | None) -> tuple[float, dict]:
    """Forward and backward in training mode (dropout on)."""
    return model.loss_and_grads(**batch, training=True, stats=stats)


def apply_gradients(optimizer: AdamW, loss: float, grads: dict, max_grad_norm: float | None,
                    step: int) -> float:
    """Clip, check, AdamW update; returns the gradient norm before clipping.

    Raises NonFiniteLossError before touching the parameters if the loss or a gradient is not
    finite, so the model stays as it was after the last good step."""
    norm = clip_grad_norm(grads, math.inf if max_grad_norm is None else max_grad_norm)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        raise NonFiniteLossError(f"step {step}: loss {loss}, gradient norm {norm}")
    optimizer.step(grads)
    return norm


def train_step(model, optimizer: AdamW, batch: dict, max_grad_norm: float | None, step: int,
               stats: dict | None = None, compute_grads=None) -> tuple[float, float]:
    """Forward, backward, clip, AdamW update. Returns (loss, gradient norm before clipping)."""
    if compute_grads is None:
        loss, grads = default_compute_grads(model, batch, stats)
    else:
        loss, grads = compute_grads(model, batch, stats)
    return loss, apply_gradients(optimizer, loss, grads, max_grad_norm, step)


def run_loop(model, optimizer: AdamW, epoch_batches: Callable[[int, int], Iterator[dict]],
             settings: LoopSettings, log: JsonlLog, state: LoopState | None = None,
             callbacks: Callbacks | None = None, progress: bool = True, desc: str = "train",
             total_steps: int | None = None) -> LoopResult:
    """Train from `state` until max_steps, the end of last_epoch or max_minutes.

    epoch_batches(epoch, start) yields the batches of an epoch from batch `start` on (dicts of
    model inputs and labels); total_steps only sizes the progress bar (default max_steps)."""
    state = LoopState() if state is None else state
    callbacks = Callbacks() if callbacks is None else callbacks
    main = world().rank == 0                  # rank 0 writes the log and shows the progress bar
    progress = progress and main
    started, tokens, tokens_per_s, out_of_time = time.perf_counter(), 0, 0.0, False
    bar = progress_bar(total=total_steps or settings.max_steps, initial=state.step, desc=desc,
                       enabled=progress, unit="step")
    batches = epoch_batches(state.epoch, state.batch_in_epoch)
    while settings.max_steps is None or state.step < settings.max_steps:
        batch = next(batches, None)
        if batch is None:
            callbacks.end_of_epoch(state)
            if settings.last_epoch is not None and state.epoch >= settings.last_epoch:
                break
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            batches = epoch_batches(state.epoch, 0)
            continue
        record = _step(model, optimizer, batch, settings, state, callbacks)
        tokens += int(batch["attention_mask"].sum())
        tokens_per_s = record["tokens_per_s"] = tokens / (time.perf_counter() - started)
        if state.step % settings.log_every == 0 and main:
            log.write(record)
        bar.update(1)
        bar.set_postfix(_postfix(record))
        out_of_time = (settings.max_minutes is not None
                       and time.perf_counter() - started > 60 * settings.max_minutes)
        _on_schedule(settings, state, callbacks, final=state.step == settings.max_steps
                     or out_of_time)
        if out_of_time:
            break
    bar.close()
    return LoopResult(state, tokens, time.perf_counter() - started, tokens_per_s, out_of_time)


def _step(model, optimizer, batch, settings: LoopSettings, state: LoopState,
          callbacks: Callbacks) -> dict:
    """One optimizer step; advances `state` and returns the step's "train" record (without
    tokens_per_s, which the loop adds)."""
    stats = {}
    lr = optimizer.current_lr()
    try:
        loss, grad_norm = train_step(model, optimizer, batch, settings.max_grad_norm,
                                     state.step + 1, stats,
                                     _split(callbacks.compute_grads, settings, state.step + 1))
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{e}; training stopped, {callbacks.last_good_checkpoint()}"
                                 ) from None
    state.step, state.batch_in_epoch = state.step + 1, state.batch_in_epoch + 1
    record = {"kind": "train", "step": state.step}
    if settings.log_epoch:
        record["epoch"] = state.epoch
    record.update(loss=loss, lr=lr, grad_norm=grad_norm)
    record.update(callbacks.batch_metrics(batch, stats))
    return record


def _split(compute_grads, settings: LoopSettings, step: int):
    """compute_grads itself on one process without accumulation; else the whole batch's gradient
    computed in slices by this rank and the others (parallel.split_step_grads)."""
    accumulation = settings.gradient_accumulation_steps
    if world().size == 1 and accumulation == 1:
        return compute_grads
    return lambda model, batch, stats: split_step_grads(model, batch, compute_grads, stats,
                                                        accumulation, step)


def _on_schedule(settings: LoopSettings, state: LoopState, callbacks: Callbacks,
                 final: bool) -> None:
    """Evaluate and save every so many steps, and after the last step."""
    if settings.eval_every and (state.step % settings.eval_every == 0 or final):
        callbacks.evaluate(state)
    if settings.checkpoint_every and (state.step % settings.checkpoint_every == 0 or final):
        callbacks.save_checkpoint(state)


def _postfix(record: dict) -> dict:
    """The progress bar's fields: loss, the batch metrics, tokens/s."""
    skip = ("kind", "step", "epoch", "lr", "grad_norm", "tokens_per_s")
    fields = {k: f"{v:.3f}" for k, v in record.items() if k not in skip}
    return dict(fields, tok_s=f"{record['tokens_per_s']:.0f}")
