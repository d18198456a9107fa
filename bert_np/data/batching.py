"""The one batch builder: token sequences of different lengths -> padded (B, T) arrays.

Every path into a model goes through here: fine-tuning and evaluation batches (`pad_batch`),
prediction (`length_sorted_batches`), pretraining batches (`data.pretraining.collate`) and the
tokenizer's `encode_batch` (`pad_inputs`).

    input_ids       (B, T) the ids, then [PAD] up to the longest row (rounded up to a multiple of
                           `pad_to_multiple_of` if given)
    token_type_ids  (B, T) the segment ids, then 0
    attention_mask  (B, T) 1 on real tokens, 0 on padding
    labels          (B, T) per-token labels padded with IGNORE_INDEX (-100), or (B,) per example

Batch order: `bucketed_batches` puts examples of similar length together (little padding) while the
order of the batches stays random; `length_sorted_batches` sorts by length for inference, where
the order does not matter and the results are put back in the original order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bert_np.layers.losses import IGNORE_INDEX


def pad_sequences(sequences: Sequence[Sequence[int]], pad_value: int,
                  pad_to_multiple_of: int | None = None) -> np.ndarray:
    """Stack sequences into an int64 (B, T) array, T = the longest length rounded up to a multiple
    of `pad_to_multiple_of`; the tail of each row is `pad_value`."""
    if len(sequences) == 0:
        raise ValueError("cannot pad an empty batch")
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of}")
    longest = max(len(s) for s in sequences)
    multiple = pad_to_multiple_of or 1
    T = -(-longest // multiple) * multiple
    out = np.full((len(sequences), T), pad_value, dtype=np.int64)  # (B, T)
    for row, sequence in zip(out, sequences):
        row[:len(sequence)] = sequence
    return out


def pad_inputs(input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]],
               pad_id: int, pad_to_multiple_of: int | None = None) -> dict[str, np.ndarray]:
    """The model inputs of a batch: input_ids, token_type_ids, attention_mask, all int64 (B, T)."""
    return {"input_ids": pad_sequences(input_ids, pad_id, pad_to_multiple_of),
            "token_type_ids": pad_sequences(token_type_ids, 0, pad_to_multiple_of),
            "attention_mask": pad_sequences([np.ones(len(x), dtype=np.int64) for x in input_ids],
                                            0, pad_to_multiple_of)}


def pad_token_labels(labels: Sequence[Sequence[int]],
                     pad_to_multiple_of: int | None = None) -> np.ndarray:
    """Per-token labels (B, T); padding positions get IGNORE_INDEX, so no loss is taken there."""
    return pad_sequences(labels, IGNORE_INDEX, pad_to_multiple_of)


@dataclass
class EncodedSplit:
    """Token ids of every example of a split (without padding) and one label per example (float;
    NaN marks an unlabelled row)."""
    ids: list[list[int]]
    types: list[list[int]]
    labels: np.ndarray


def pad_batch(split: EncodedSplit, rows, pad_id: int, dtype, regression: bool) -> dict:
    """The rows of a split as one padded batch: input_ids, token_type_ids, attention_mask, labels
    (B,): `dtype` for regression, int64 class ids otherwise."""
    batch = pad_inputs([split.ids[i] for i in rows], [split.types[i] for i in rows], pad_id)
    labels = split.labels[rows]
    batch["labels"] = labels.astype(dtype) if regression else labels.astype(np.int64)
    return batch


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


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[np.ndarray]:
    """Row indices sorted by length (stable), cut into batches: the least padding, for inference."""
    order = np.argsort(lengths, kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
