"""PNG plots of training curves, read from the JSONL log the training loop writes."""
from __future__ import annotations

import os

import numpy as np


def _series(records, kind, key):
    pts = [(r["step"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
    return np.array(pts, dtype=float).reshape(-1, 2)


def plot_training_curves(records: list[dict], path: str | os.PathLike, title: str,
                         train_keys=("loss",), eval_keys=("loss",)) -> None:
    """One panel per quantity: training values (light, with a moving average) and evaluations.

    Drawn on a bare matplotlib Figure (not pyplot), so the caller's backend, for example a
    notebook's inline plots, is left as it was."""
    from matplotlib.figure import Figure

    keys = list(dict.fromkeys(list(train_keys) + list(eval_keys)))
    fig = Figure(figsize=(5 * len(keys), 3.6))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        train = _series(records, "train", key) if key in train_keys else np.zeros((0, 2))
        if len(train):
            ax.plot(train[:, 0], train[:, 1], color="tab:blue", alpha=0.25, lw=0.8)
            window = max(1, len(train) // 25)
            smooth = np.convolve(train[:, 1], np.ones(window) / window, mode="valid")
            ax.plot(train[window - 1:, 0], smooth, color="tab:blue", label=f"train (avg of {window})")
        held_out = _series(records, "eval", key) if key in eval_keys else np.zeros((0, 2))
        if len(held_out):
            ax.plot(held_out[:, 0], held_out[:, 1], "o-", color="tab:orange", label="held-out")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if len(train) or len(held_out):
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
