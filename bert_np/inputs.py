"""Checks of everything a user passes to a model: input ids, token types, attention mask, labels.

Each problem is a ValueError that names the argument and says what is wrong (see the README's
robustness section), raised before any arithmetic, so a bad batch never surfaces as a NumPy
traceback from deep inside a layer or as a silently wrong number.
"""
from __future__ import annotations

import numpy as np

from .config import BertConfig
from .layers import IGNORE_INDEX

def _as_array(name: str, x) -> np.ndarray:
    """np.asarray(x), with a ragged nested list reported under the argument's name."""
    try:
        return np.asarray(x)
    except ValueError as e:  # NumPy refuses inhomogeneous nested sequences
        raise ValueError(f"{name} must be a rectangular array; got ragged nested sequences "
                         f"(pad every row to the same length and pass an attention_mask): {e}"
                         ) from None


def _as_int_array(name: str, x, allow_bool: bool = False) -> np.ndarray:
    """x as int64. Integer arrays pass; float arrays pass only if every value is a finite whole
    number (1.0 -> 1); bool passes only where `allow_bool` (an attention mask); anything else is
    a ValueError naming the argument and the dtype."""
    arr = _as_array(name, x)
    if arr.dtype == bool and allow_bool:
        return arr.astype(np.int64)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        if np.issubdtype(arr.dtype, np.floating) and arr.size:
            finite = np.isfinite(arr)
            if finite.all() and np.all(arr == np.round(arr)):
                return arr.astype(np.int64)
            bad = arr[~finite | (arr != np.round(arr))][0]
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype} with the "
                             f"non-integer value {bad}")
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds {arr.max()}, too large for int64")
    return arr.astype(np.int64, copy=False)


def check_inputs(cfg: BertConfig, input_ids, token_type_ids, attention_mask):
    """Validate and normalise the model inputs; every problem names the argument.

    input_ids (B, T) integers in [0, vocab_size), B >= 1, 1 <= T <= max_position_embeddings;
    token_type_ids (B, T) in [0, type_vocab_size), default all 0; attention_mask (B, T) of 0/1
    (or bool), default all 1. Returns the three as int64 arrays."""
    input_ids = _as_int_array("input_ids", input_ids)
    if input_ids.size == 0:
        raise ValueError(f"input_ids is an empty batch (shape {input_ids.shape}); it needs at "
                         "least one sequence of at least one token")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be 2-D (batch, seq_len), got shape {input_ids.shape}"
                         + ("; for a single sequence use input_ids[None, :]"
                            if input_ids.ndim == 1 else ""))
    B, T = input_ids.shape
    if T > cfg.max_position_embeddings:
        raise ValueError(f"input_ids has sequence length {T}, longer than max_position_embeddings "
                         f"({cfg.max_position_embeddings})")
    _check_range("input_ids", input_ids, cfg.vocab_size, "vocab_size")
    if token_type_ids is None:
        token_type_ids = np.zeros_like(input_ids)
    else:
        token_type_ids = _as_int_array("token_type_ids", token_type_ids)
        _check_shape("token_type_ids", token_type_ids, input_ids.shape)
        _check_range("token_type_ids", token_type_ids, cfg.type_vocab_size, "type_vocab_size")
    if attention_mask is None:
        attention_mask = np.ones_like(input_ids)
    else:
        attention_mask = _as_int_array("attention_mask", attention_mask, allow_bool=True)
        _check_shape("attention_mask", attention_mask, input_ids.shape)
        if not np.isin(attention_mask, (0, 1)).all():
            bad = attention_mask[~np.isin(attention_mask, (0, 1))][0]
            raise ValueError(f"attention_mask must hold only 0 (padding) and 1 (token), "
                             f"found {bad}")
    return input_ids, token_type_ids, attention_mask


def _check_shape(name, arr, shape, what="input_ids"):
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape} to match {what}")


def _check_range(name, arr, upper, upper_name):
    if arr.min() < 0 or arr.max() >= upper:
        bad = arr[(arr < 0) | (arr >= upper)][0]
        problem = "negative" if bad < 0 else f"not below {upper_name}={upper}"
        raise ValueError(f"{name} holds {bad} ({problem}); valid values are [0, {upper})")


def check_token_labels(labels, shape, num_classes, name="labels"):
    """Class labels of `shape`: integers in [0, num_classes), or IGNORE_INDEX (-100)."""
    labels = _as_int_array(name, labels)
    _check_shape(name, labels, shape, "the batch of input_ids")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise ValueError(f"{name} holds {labels[bad][0]}, outside [0, {num_classes}) and not "
                         f"the ignore index {IGNORE_INDEX}")
    return labels


def check_regression_labels(labels, batch_size, dtype, name="labels"):
    """Regression targets: B finite real numbers (shape (B,) or (B, 1))."""
    arr = _as_array(name, labels)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"{name} must hold real numbers for regression (num_labels=1), "
                         f"got dtype {arr.dtype}")
    if arr.shape not in ((batch_size,), (batch_size, 1)):
        raise ValueError(f"{name} must have shape ({batch_size},) for regression, "
                         f"got {arr.shape}")
    arr = arr.astype(dtype).reshape(-1)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds {arr[~np.isfinite(arr)][0]} at row "
                         f"{int(np.flatnonzero(~np.isfinite(arr))[0])}; regression labels must "
                         "be finite")
    return arr


def check_distillation(teacher_logits, temperature, alpha, labels, batch_size, num_labels, dtype):
    """The distillation arguments of loss_and_grads: teacher logits (B, C) or (B,) for regression,
    finite; a finite temperature > 0; alpha in [0, 1]; labels present unless alpha == 1.
    Returns (teacher logits as (B, C) in `dtype`, temperature, alpha)."""
    arr = _as_array("teacher_logits", teacher_logits)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"teacher_logits must hold real numbers, got dtype {arr.dtype}")
    shapes = ((batch_size, num_labels),) + (((batch_size,),) if num_labels == 1 else ())
    if arr.shape not in shapes:
        raise ValueError(f"teacher_logits has shape {arr.shape}, expected "
                         f"{' or '.join(map(str, shapes))} (batch, num_labels)")
    arr = arr.astype(dtype).reshape(batch_size, num_labels)
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"teacher_logits holds a non-finite value in row {row}")
    try:
        temperature, alpha = float(temperature), float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"temperature and alpha must be numbers, got {temperature!r} and "
                         f"{alpha!r}") from None
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the teacher's term), got {alpha}")
    if alpha < 1.0 and labels is None:
        raise ValueError(f"labels are needed when alpha < 1 (the label term has weight "
                         f"1 - alpha = {1 - alpha:g})")
    return arr, temperature, alpha

def check_choice_inputs(cfg: BertConfig, input_ids, token_type_ids, attention_mask):
    """Multiple choice: input_ids (B, C, T), token_type_ids and attention_mask None or (B, C, T).
    Returns the three flattened to (B*C, T) and checked as check_inputs does, and (B, C)."""
    ids = _as_array("input_ids", input_ids)
    if ids.ndim != 3 or ids.size == 0:
        raise ValueError(f"input_ids must be 3-D (batch, num_choices, seq_len) for multiple "
                         f"choice, got shape {ids.shape}")
    B, C, T = ids.shape
    flat = []
    for name, x in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
        if x is not None:
            x = _as_array(name, x)
            _check_shape(name, x, ids.shape)
            x = x.reshape(B * C, T)
        flat.append(x)
    return (*check_inputs(cfg, ids.reshape(B * C, T), *flat), (B, C))


def check_span_positions(positions, batch_size, seq_len, name):
    """Question answering: B integer token positions, shape (B,) or (B, 1); clamped to
    [0, seq_len] as transformers does, seq_len being the ignore index (a span outside the input)."""
    positions = _as_int_array(name, positions)
    if positions.shape not in ((batch_size,), (batch_size, 1)):
        raise ValueError(f"{name} must have shape ({batch_size},), one position per sequence of "
                         f"the batch of input_ids, got {positions.shape}")
    return np.clip(positions.reshape(-1), 0, seq_len)


def check_real_labels(labels, shape, dtype, name="labels", what="regression"):
    """Real-valued labels of `shape` (regression targets, multi-label 0/1 targets), finite;
    multi-label targets must lie in [0, 1]."""
    arr = _as_array(name, labels)
    if arr.dtype == bool and what == "multi_label_classification":
        arr = arr.astype(dtype)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold real numbers for {what}, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} for {what} (batch, num_labels), "
                         f"got {arr.shape}")
    arr = arr.astype(dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds {arr[~np.isfinite(arr)][0]}; {what} labels must be finite")
    if what == "multi_label_classification" and ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"{name} holds {arr[(arr < 0) | (arr > 1)][0]}; multi-label targets are "
                         "probabilities in [0, 1] (1 where the label applies)")
    return arr
