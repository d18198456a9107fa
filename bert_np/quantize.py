"""Dynamic int8 quantization of a model, for inference: `q = bert_np.quantize_dynamic(model)`.

What is quantized: the six Linear layers of every encoder layer (query, key, value, attention
output, intermediate, output), which hold ~all of the encoder's multiply-adds (12 H^2 per token and
layer against H^2 per *sequence* for the pooler). Their weights become Int8Weight (int8, a scale
per output channel); their inputs are quantized per row at run time (layers/quantized_linear.py).
What stays float, and why:
  - the embeddings and LayerNorms (no product to speed up; lookups and normalisation);
  - the pooler and the classifier / NSP heads: a few rows per batch (negligible time), and their
    error would go straight into the logits;
  - the MLM head: its decoder is the word-embedding table (tied; quantizing it would quantize the
    embeddings too), and its transform is one H x H product next to the H x V decoder.

The quantized model is the same class with the same forward() outputs. It is inference only:
loss_and_grads raises (there is no gradient through rounding), as does anything that treats an
Int8Weight as a float array.

Checkpoints: save_pretrained writes each quantized weight as int8 under its Hugging Face name and
its scales under `<name>_scale` (float32, a name no Hugging Face checkpoint uses), and records
    "quantization": {"method": "dynamic_int8", ...}
in config.json; from_pretrained of such a directory returns the quantized model, with the same
int8 values and scales, so its outputs are identical. Caution: transformers' from_pretrained does
NOT refuse such a directory: it casts the int8 tensors to float (weights up to +-127, no scales) and
only lists the `_scale` tensors as unexpected. Give transformers the float model's directory.
`bert-np quantize --model DIR --out DIR` (train/quantize.py) writes the quantized copy of a saved
directory; `bert-np predict` and `bert-np evaluate` load it like a float one.
"""
from __future__ import annotations

import copy
import re

import numpy as np

from .layers.quantized_linear import Int8Weight, quantize_weight

METHOD = "dynamic_int8"
SCALE_SUFFIX = "_scale"
QUANTIZED_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "intermediate.dense", "output.dense")
_QUANTIZED_WEIGHT = re.compile(r"(^|\.)encoder\.layer\.\d+\.(" +
                               "|".join(re.escape(n) for n in QUANTIZED_LINEARS) + r")\.weight$")

QUANTIZATION_CONFIG = {
    "method": METHOD,
    "weights": "int8, symmetric, one scale per output channel",
    "activations": "int8, symmetric, one scale per row (token), computed at run time",
    "modules": [f"encoder.layer.*.{n}" for n in QUANTIZED_LINEARS],
}


def is_quantized_weight_name(name: str) -> bool:
    """True for the weight names quantize_dynamic quantizes (with or without a "bert." prefix)."""
    return _QUANTIZED_WEIGHT.search(name) is not None


def is_quantized(model) -> bool:
    return quantization_of(model.config) is not None


def quantization_of(config):
    """The config's "quantization" entry (a dict), or None for a float model."""
    return config.extra.get("quantization")


def quantize_dynamic(model):
    """A copy of `model` (any bert_np model class) whose encoder Linear layers run in int8.

    The float model is left as it is; the copy shares its float parameters (embeddings,
    LayerNorms, biases, heads), which nothing in inference writes to."""
    if is_quantized(model):
        raise ValueError("the model is already quantized")
    if model.dtype != np.float32:
        raise ValueError(f"quantize_dynamic takes a float32 model, got {model.dtype}")
    q = copy.copy(model)
    q.config = copy.deepcopy(model.config)
    q.config.extra["quantization"] = copy.deepcopy(QUANTIZATION_CONFIG)
    q.params = {name: quantize_weight(w) if is_quantized_weight_name(name) else w
                for name, w in model.params.items()}
    return q


def refuse_training(model) -> None:
    """Raise if `model` is quantized: called where a forward keeps its cache for a backward."""
    if is_quantized(model):
        raise TypeError(f"this {type(model).__name__} is quantized to int8 "
                        f"({quantization_of(model.config)['method']}) and is inference only: "
                        "loss_and_grads needs the float model (train it, then quantize_dynamic)")


# ---- checkpoints ------------------------------------------------------------------------------

def tensors_to_save(params: dict) -> dict[str, np.ndarray]:
    """params with each Int8Weight split into `name` (int8) and `name_scale` (float32)."""
    out = {}
    for name, p in params.items():
        if isinstance(p, Int8Weight):
            out[name] = p.q
            out[name + SCALE_SUFFIX] = p.scale.astype(np.float32)
        else:
            out[name] = p
    return out


def pop_scales(state: dict, config) -> dict[str, np.ndarray]:
    """Remove the `<name>_scale` tensors of a quantized checkpoint's state dict (already renamed
    to the model's keys) and return them keyed by their weight's name; {} for a float one."""
    if quantization_of(config) is None:
        return {}
    method = quantization_of(config).get("method")
    if method != METHOD:
        raise ValueError(f"unknown quantization method {method!r} in config.json "
                         f"(bert_np reads {METHOD!r})")
    return {key[:-len(SCALE_SUFFIX)]: state.pop(key) for key in list(state)
            if key.endswith(SCALE_SUFFIX)}


def param_from_checkpoint(value: np.ndarray, scale: np.ndarray | None, dtype) -> object:
    """A parameter as the model holds it: an Int8Weight for an int8 tensor with its scale, else
    a float array of the model's dtype."""
    if scale is None:
        if value.dtype == np.int8:
            raise ValueError("an int8 tensor without its scale: the checkpoint is incomplete")
        return np.asarray(value, dtype=dtype)        # read for this model: no copy needed
    return Int8Weight(np.asarray(value), np.asarray(scale, dtype=dtype))
