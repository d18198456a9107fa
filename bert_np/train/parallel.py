"""Data-parallel training on MPI, and gradient accumulation: one step, however the batch is split.

`batch_size` is the global batch: the examples of one optimizer step, whatever the number of
processes N (`mpirun -n N bert-np ...`) and of micro-batches K (`--gradient-accumulation-steps`).
Every rank builds the same batches in the same order (same seed), and in each step:

    rows of the global batch (B)  ->  N contiguous shards, rank r takes shard r
    shard  ->  K contiguous micro-batches, each: compute_grads -> += into one flat buffer
    one Allreduce (SUM) of the buffer  ->  every rank holds the global gradient and applies it

Sums equal the one-process step because each micro-batch is told the whole batch's counts:
`denominators = model.loss_denominators(**batch)` (masked positions, labelled rows), so its loss
is its share, loss_i * count_i / count_total, and so is its gradient; the shares add up to the
global mean. Dropout too: `dropout = DropoutKeys.draw(model.rng).for_rows(first row)` gives each
micro-batch the step's keys and numbers its elements from its first row's global index
(bert_np/rng.py), so a row gets the mask it would get in the whole batch. Both go into the
micro-batch dict, and compute_grads passes them on to loss_and_grads.

The losses and the callbacks' stats (counts are summed, per-row arrays such as logits
concatenated in row order) are gathered with one small allgather, so every rank reports the same
values; rank 0 alone writes logs, checkpoints, plots and the progress bar.

MPI is used only under mpirun: mpi4py is imported when OMPI_COMM_WORLD_SIZE or PMI_SIZE (set by
Open MPI's and MPICH's launchers) says there is more than one process, or when BERT_NP_MPI=1.
Otherwise `world()` is a one-process stand-in and nothing is imported.
"""
from __future__ import annotations

import os

import numpy as np

from ..rng import DropoutKeys

FAIL_RANK_VARIABLE = "BERT_NP_FAIL_RANK"   # tests only: this rank raises at step BERT_NP_FAIL_STEP


class SingleProcess:
    """The world of a run without MPI: rank 0 of 1."""
    rank, size = 0, 1

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        pass

    def allgather(self, value) -> list:
        return [value]

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class MpiWorld:
    """MPI.COMM_WORLD through mpi4py: rank, size, an in-place Allreduce, allgather, Abort."""

    def __init__(self):
        from mpi4py import MPI
        self.mpi, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        self.comm.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)

    def allgather(self, value) -> list:
        return self.comm.allgather(value)

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


_WORLD = None


def launched_by_mpirun() -> bool:
    """True under a launcher that started more than one process, or with BERT_NP_MPI=1."""
    if os.environ.get("BERT_NP_MPI") == "1":
        return True
    return any(int(os.environ.get(name, "1") or 1) > 1
               for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))


def world():
    """This process's MPI world (SingleProcess outside mpirun); created once."""
    global _WORLD
    if _WORLD is None:
        _WORLD = MpiWorld() if launched_by_mpirun() else SingleProcess()
    return _WORLD


def is_main_process() -> bool:
    """Rank 0: the process that writes files and prints."""
    return world().rank == 0


def shard(n: int, parts: int, index: int) -> tuple[int, int]:
    """Rows [lo, hi) of part `index` when n rows are cut into `parts` contiguous parts whose sizes
    differ by at most one (earlier parts larger); a part may be empty when n < parts."""
    size, extra = divmod(n, parts)
    lo = index * size + min(index, extra)
    return lo, lo + size + (index < extra)


def slice_batch(batch: dict, lo: int, hi: int) -> dict:
    """Rows lo..hi of every per-row array of a batch (arrays whose first axis is the batch's)."""
    rows = len(batch["input_ids"])
    return {k: v[lo:hi] if isinstance(v, np.ndarray) and v.ndim and len(v) == rows else v
            for k, v in batch.items()}


def merge_stats(parts: list[dict]) -> dict:
    """Stats of consecutive slices as one: numbers summed, arrays concatenated along rows."""
    merged = {}
    for part in parts:
        for k, v in part.items():
            if k not in merged:
                merged[k] = v
            elif isinstance(v, np.ndarray):
                merged[k] = np.concatenate([merged[k], v])
            else:
                merged[k] = merged[k] + v
    return merged


def split_step_grads(model, batch: dict, compute_grads, stats: dict | None, accumulation: int,
                     step: int, comm=None) -> tuple[float, dict]:
    """(loss, grads) of the global batch, computed as this rank's K micro-batches and summed over
    the ranks; equal to compute_grads(model, batch) on one process up to rounding."""
    comm = world() if comm is None else comm
    _maybe_fail(comm.rank, step)
    if not hasattr(model, "loss_denominators"):
        raise TypeError(f"{type(model).__name__} has no loss_denominators: it cannot be trained "
                        f"on several processes or with gradient accumulation")
    denominators = model.loss_denominators(**batch)
    keys = DropoutKeys.draw(model.rng)                   # one draw per step, on every rank alike
    flat = np.zeros(sum(p.size for p in model.params.values()), dtype=model.dtype)
    grads, offset = {}, 0
    for name, p in model.params.items():                  # views of the one contiguous buffer
        grads[name] = flat[offset:offset + p.size].reshape(p.shape)
        offset += p.size
    lo, hi = shard(len(batch["input_ids"]), comm.size, comm.rank)
    loss, parts = 0.0, []
    for k in range(accumulation):
        a, b = shard(hi - lo, accumulation, k)
        if a == b:
            continue                                      # more slices than rows
        micro = slice_batch(batch, lo + a, lo + b)
        micro.update(denominators=denominators, dropout=keys.for_rows(lo + a))
        part = {} if stats is not None else None
        micro_loss, micro_grads = compute_grads(model, micro, part)
        loss += micro_loss
        for name, g in micro_grads.items():
            grads[name] += g
        if part is not None:
            parts.append(part)
    comm.allreduce_sum(flat)
    gathered = comm.allgather((loss, merge_stats(parts)))  # in rank order: the same everywhere
    if stats is not None:
        stats.update(merge_stats([s for _, s in gathered]))
    return float(sum(x for x, _ in gathered)), grads


def _maybe_fail(rank: int, step: int) -> None:
    """A failure injected by the tests: BERT_NP_FAIL_RANK=r (and BERT_NP_FAIL_STEP=s, default 1)."""
    if os.environ.get(FAIL_RANK_VARIABLE) == str(rank) \
            and step == int(os.environ.get("BERT_NP_FAIL_STEP", "1")):
        raise RuntimeError(f"failure injected by {FAIL_RANK_VARIABLE}={rank} at step {step}")


class NullLog:
    """The JSONL log of the ranks other than 0: writes nothing."""

    def write(self, record: dict) -> None:
        pass

    def records(self) -> list[dict]:
        return []
