"""Evaluation metrics, written out in NumPy.

    accuracy   fraction of predictions equal to the label
    f1         binary F1 of the positive class 1: 2 TP / (2 TP + FP + FN)            (MRPC)
    mcc        Matthews correlation, binary:
               (TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))          (CoLA)
    pearson    linear correlation: sum(dx dy) / sqrt(sum(dx^2) sum(dy^2)), d = deviation from mean
    spearman   Pearson correlation of the ranks; tied values share their average rank (STS-B)

Degenerate cases return 0.0 instead of NaN, so that "the best checkpoint so far" stays well
defined: MCC when a row or column of the confusion matrix is empty (for example constant
predictions), F1 when there are no positives at all (TP + FP + FN = 0), and Pearson or Spearman
when either input is constant. Empty or mismatched inputs and non-finite scores raise ValueError.
"""
from __future__ import annotations

import numpy as np

from bert_np.data.tasks import Task, get_task


def _pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D arrays of the same, non-zero length."""
    predictions, labels = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.size} predictions for {labels.size} labels")
    if predictions.size == 0:
        raise ValueError("no predictions to score")
    return predictions, labels


def _binary_counts(predictions, labels) -> tuple[int, int, int, int]:
    """(TP, TN, FP, FN) with class 1 as the positive class; both inputs must be 0/1."""
    predictions, labels = _pair(predictions, labels)
    for name, values in (("predictions", predictions), ("labels", labels)):
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"binary metric: {name} must be 0 or 1")
    predicted, actual = predictions == 1, labels == 1
    tp = int(np.sum(predicted & actual))
    tn = int(np.sum(~predicted & ~actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    return tp, tn, fp, fn


def accuracy(predictions, labels) -> float:
    """Fraction of predictions equal to the label."""
    predictions, labels = _pair(predictions, labels)
    return float(np.mean(predictions == labels))


def f1_score(predictions, labels) -> float:
    """F1 of the positive class 1 (the harmonic mean of precision and recall), 2 TP / (2 TP + FP
    + FN); 0.0 when there is no positive among predictions and labels."""
    tp, _, fp, fn = _binary_counts(predictions, labels)
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation of binary predictions, in [-1, 1]; 0.0 when the denominator is 0
    (constant predictions or constant labels), the limit used by scikit-learn too."""
    tp, tn, fp, fn = _binary_counts(predictions, labels)
    denominator = np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def _finite_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float64 1-D arrays of the same length, without NaN or infinity."""
    x, y = _pair(x, y)
    x, y = x.astype(np.float64), y.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("correlation of non-finite values (NaN or inf)")
    return x, y


def pearson(x, y) -> float:
    """Pearson correlation sum(dx dy) / sqrt(sum(dx^2) sum(dy^2)), with dx = x - mean(x);
    0.0 when x or y is constant."""
    x, y = _finite_pair(x, y)
    if np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    dx, dy = x - x.mean(), y - y.mean()
    r = np.sum(dx * dy) / np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.clip(r, -1.0, 1.0))


def average_ranks(values) -> np.ndarray:
    """Ranks 1..N of the values; a group of tied values all get the mean of the ranks they span
    (ranks of [10, 20, 20, 30] are [1, 2.5, 2.5, 4])."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(starts_group) - 1                        # group index of each sorted value
    first = np.flatnonzero(starts_group)                        # 0-based first position per group
    last = np.r_[first[1:], values.size] - 1                    # 0-based last position per group
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = (first + last)[group] / 2 + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson correlation of the average ranks; 0.0 when x or y is
    constant."""
    x, y = _finite_pair(x, y)
    return pearson(average_ranks(x), average_ranks(y))


METRICS = {
    "accuracy": accuracy,
    "f1": f1_score,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def task_predictions(task: Task, predictions) -> np.ndarray:
    """Predictions as one value per example: class ids from logits [N, C] by argmax, a regression
    output [N, 1] as [N]; 1-D predictions are returned unchanged."""
    predictions = np.asarray(predictions)
    if predictions.ndim == 2 and not task.is_regression:
        return predictions.argmax(axis=1)
    if predictions.ndim == 2 and predictions.shape[1] == 1:
        return predictions[:, 0]
    if predictions.ndim != 1:
        raise ValueError(f"predictions of shape {predictions.shape} for task {task.name}")
    return predictions


def compute_metrics(task: str | Task, predictions, labels) -> dict[str, float | str]:
    """The metrics of a task, {name: value}, in the order of `task.metrics`; when a classifier
    gives every one of two or more examples the same class, also "constant_prediction": that
    class's name (an MRPC model calling every pair a paraphrase scores F1 81 and learned nothing).

    predictions: class ids [N] or logits [N, C] for classification; scores [N] or [N, 1] for
    regression. labels: [N]."""
    task = get_task(task)
    predictions = task_predictions(task, predictions)
    metrics = {name: METRICS[name](predictions, labels) for name in task.metrics}
    if not task.is_regression and predictions.size > 1 and np.all(predictions == predictions[0]):
        k = int(predictions[0])
        metrics["constant_prediction"] = (task.label_names[k] if k < len(task.label_names)
                                          else f"LABEL_{k}")
    return metrics


def format_metrics(metrics: dict) -> str:
    """One line for a log: "accuracy 0.8372, loss 0.4011" (the float entries, 4 decimals), and a
    warning when the model gave every example one class (`constant_prediction`)."""
    line = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    if "constant_prediction" in metrics:
        line += f" (every example predicted {metrics['constant_prediction']!r})"
    return line
