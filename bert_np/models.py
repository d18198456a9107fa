"""The model classes, named and computed as transformers' BERT classes: BertModel,
BertForPreTraining, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification,
BertForQuestionAnswering, BertForMultipleChoice, BertForNextSentencePrediction.

Each holds `params`, a flat dict keyed by the Hugging Face state_dict names, and offers
    forward(input_ids, token_type_ids=None, attention_mask=None, training=False,
            output_hidden_states=False, output_attentions=False) -> dict of outputs
    loss_and_grads(..., labels=..., training=False) -> (loss, grads with the keys of params)
    from_pretrained(directory) / save_pretrained(directory, max_shard_size=None)
output_hidden_states adds out["hidden_states"], a tuple of L + 1 arrays (B, T, H): the embeddings'
output, then every layer's; output_attentions adds out["attentions"], L arrays (B, A, T, T): every
layer's attention probabilities after dropout (equal to before it when not training). Both are
what the computation produces anyway, so asking for them changes no number, and not asking costs
nothing. loss_and_grads accepts the two flags too and puts the tuples into `stats` when given one.
A slice of a larger batch (a data-parallel rank's shard, a micro-batch of gradient accumulation)
gets the whole batch's loss and gradient share from two optional arguments of loss_and_grads:
`denominators`, the counts the batch's means divide by (`loss_denominators(**batch)` of the whole
batch), and `dropout`, the step's DropoutKeys starting at the slice's first row (bert_np/rng.py).
Summing the slices' losses and gradients then gives the whole batch's, masks included.
The layers live in bert_np/layers, the encoder in encoder.py and the heads in heads.py; a class only
wires them together and checks its inputs.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np

from . import hf, quantize
from .config import BertConfig
from .heads import (classifier_head_backward, classifier_head_forward, mlm_head_backward,
                    mlm_head_forward, nsp_head_backward, nsp_head_forward, span_head_backward,
                    span_head_forward)
from .layers import (IGNORE_INDEX, bce_with_logits_backward, bce_with_logits_forward,
                     cross_entropy_backward, cross_entropy_forward, mse_backward, mse_forward,
                     padding_mask_bias, soft_cross_entropy_backward, soft_cross_entropy_forward)
from .inputs import (check_choice_inputs, check_distillation, check_inputs, check_real_labels,
                     check_regression_labels, check_span_positions, check_token_labels)
from .encoder import encoder_backward, encoder_forward, pooler_backward, pooler_forward
from .rng import DropoutKeys

logger = logging.getLogger("bert_np")


# ---- parameter shapes and initialisation -------------------------------------------------------

def encoder_shapes(cfg: BertConfig, prefix: str, pooler: bool) -> dict[str, tuple]:
    """name -> shape of the embeddings, the layers and (optionally) the pooler."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    e = prefix + "embeddings."
    shapes = {e + "word_embeddings.weight": (cfg.vocab_size, H),
              e + "position_embeddings.weight": (cfg.max_position_embeddings, H),
              e + "token_type_embeddings.weight": (cfg.type_vocab_size, H),
              e + "LayerNorm.weight": (H,), e + "LayerNorm.bias": (H,)}
    for i in range(cfg.num_hidden_layers):
        p = f"{prefix}encoder.layer.{i}."
        for name, (n_out, n_in) in {"attention.self.query": (H, H), "attention.self.key": (H, H),
                                    "attention.self.value": (H, H), "attention.output.dense": (H, H),
                                    "intermediate.dense": (I, H), "output.dense": (H, I)}.items():
            shapes[p + name + ".weight"] = (n_out, n_in)
            shapes[p + name + ".bias"] = (n_out,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + name + ".weight"] = (H,)
            shapes[p + name + ".bias"] = (H,)
    if pooler:
        shapes[prefix + "pooler.dense.weight"] = (H, H)
        shapes[prefix + "pooler.dense.bias"] = (H,)
    return shapes


def mlm_head_shapes(cfg: BertConfig) -> dict[str, tuple]:
    """The MLM head; an untied decoder (tie_word_embeddings False) adds its own weight and bias."""
    H = cfg.hidden_size
    p = "cls.predictions."
    shapes = {p + "bias": (cfg.vocab_size,), p + "transform.dense.weight": (H, H),
              p + "transform.dense.bias": (H,), p + "transform.LayerNorm.weight": (H,),
              p + "transform.LayerNorm.bias": (H,)}
    if not cfg.tie_word_embeddings:
        shapes[p + "decoder.weight"] = (cfg.vocab_size, H)
        shapes[p + "decoder.bias"] = (cfg.vocab_size,)
    return shapes


def _is_drawn(name: str) -> bool:
    """True for the parameters init_param draws at random: weight matrices and embeddings."""
    return "LayerNorm" not in name and not name.endswith("bias")


def init_param(name: str, shape: tuple, cfg: BertConfig, rng, dtype) -> np.ndarray:
    """As transformers initialises BERT: LayerNorm ones/zeros, biases zero, every weight matrix
    and embedding N(0, initializer_range), the padding token's embedding row zero."""
    if not _is_drawn(name):
        ones = "LayerNorm" in name and name.endswith("weight")
        return (np.ones if ones else np.zeros)(shape, dtype=dtype)
    w = rng.standard_normal(shape, dtype=dtype)               # in the model's dtype: a float32
    w *= np.dtype(dtype).type(cfg.initializer_range)          # model never holds a float64 copy
    if name.endswith("word_embeddings.weight"):
        w[cfg.pad_token_id] = 0.0
    return w


def initial_params(shapes: dict[str, tuple], cfg: BertConfig, seed: int, dtype,
                   loaded: dict) -> dict:
    """name -> array for every parameter of `shapes`: the `loaded` ones as given, the others
    from init_param with one Generator seeded with `seed`. The draws a loaded parameter would
    have taken are skipped (drawn and dropped, a bounded chunk at a time), so a parameter starts
    from the same values whether or not the others came from a file."""
    rng = np.random.default_rng(seed)
    params, skipped = {}, 0
    for name, shape in shapes.items():
        if name in loaded:
            params[name] = loaded[name]
            skipped += math.prod(shape) if _is_drawn(name) else 0
            continue
        _skip_draws(rng, skipped, dtype)
        skipped = 0
        params[name] = init_param(name, shape, cfg, rng, dtype)
    return params


def _skip_draws(rng, n: int, dtype) -> None:
    """Advance rng past n standard normal draws of `dtype`, as standard_normal(n) would."""
    buffer = np.empty(min(n, 2 ** 20), dtype=dtype)
    while n > 0:
        k = min(n, buffer.size)
        rng.standard_normal(out=buffer[:k], dtype=dtype)
        n -= k


def _model_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _count_correct(stats, name, logits, labels):
    """stats[name_correct], stats[name_total] += argmax hits and count over labels != -100."""
    if stats is None:
        return
    kept = labels != IGNORE_INDEX
    stats[name + "_correct"] = stats.get(name + "_correct", 0) + int(
        (logits.argmax(-1) == labels)[kept].sum())
    stats[name + "_total"] = stats.get(name + "_total", 0) + int(kept.sum())


def _requested(output_hidden_states, output_attentions):
    """The lists encoder_forward fills for output_hidden_states / output_attentions, or None."""
    return ([] if output_hidden_states else None), ([] if output_attentions else None)


def _add_requested(out, hidden_states, attentions):
    """out["hidden_states"], out["attentions"] as tuples, where they were asked for."""
    if out is None:
        return out
    if hidden_states is not None:
        out["hidden_states"] = tuple(hidden_states)
    if attentions is not None:
        out["attentions"] = tuple(attentions)
    return out


def _share(count: int, denominators: dict | None, term: str) -> float:
    """The weight of a mean over `count` items within the whole batch's mean over
    denominators[term] items: count / total (1.0 without denominators: this batch is the batch)."""
    if denominators is None:
        return 1.0
    total = denominators[term]
    return count / total if total else 0.0


def _count_labelled(labels) -> int:
    return 0 if labels is None else int((np.asarray(labels) != IGNORE_INDEX).sum())


# ---- the classes --------------------------------------------------------------------------------

class BertPreTrainedModel:
    """What every model class shares: parameters, dtype, dropout generator, checkpoint I/O.
    `params` (keyword): parameters already in hand (from_pretrained's, read from the file); the
    others are initialised from `seed`."""

    base_prefix = "bert."
    has_pooler = True

    def __init__(self, config: BertConfig, seed: int = 0, dtype=np.float32, *,
                 params: dict | None = None):
        if not isinstance(config, BertConfig):
            raise TypeError(f"config must be a BertConfig, got {type(config).__name__}")
        self.config = config
        self.dtype = _model_dtype(dtype)
        self.params = initial_params(self.param_shapes(config), config, seed, self.dtype,
                                     params or {})
        self.rng = np.random.default_rng([seed, 1])   # dropout, when training=True
        self.loading_info = None

    @classmethod
    def param_shapes(cls, cfg: BertConfig) -> dict[str, tuple]:
        return encoder_shapes(cfg, cls.base_prefix, cls.has_pooler)

    def num_parameters(self) -> int:
        return sum(p.size for p in self.params.values())

    def _complete(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """grads in the order of params, zeros for the parameters the loss did not reach."""
        return {k: grads[k] if k in grads else np.zeros_like(v) for k, v in self.params.items()}

    # -- shared pieces of forward / backward --

    def _encode(self, input_ids, token_type_ids, attention_mask, training, *, keep_cache=True,
                hidden_states=None, attentions=None, checked=False,
                dropout: DropoutKeys | None = None):
        """Checked inputs -> encoder (and pooler): (h, pooled, cache, dropout keys or None).
        `hidden_states`, `attentions`: lists to fill (see encoder_forward). In training every
        dropout call takes its key from `dropout`, by default one draw from the model's Generator
        per call of this method (bert_np/rng.py: DropoutKeys)."""
        cfg = self.config
        if keep_cache:                                # a cache is kept for a backward pass
            quantize.refuse_training(self)
        if not checked:
            input_ids, token_type_ids, attention_mask = check_inputs(cfg, input_ids,
                                                                     token_type_ids, attention_mask)
        rng = None if not training else DropoutKeys.draw(self.rng) if dropout is None else dropout
        mask_bias = padding_mask_bias(attention_mask, self.dtype)                    # (B, 1, 1, T)
        h, c_enc = encoder_forward(input_ids, token_type_ids, mask_bias, self.params,
                                   self.base_prefix, cfg, rng, keep_cache=keep_cache,
                                   hidden_states=hidden_states, attentions=attentions)  # (B, T, H)
        pooled, c_pool = (pooler_forward(h, self.params, self.base_prefix)
                          if self.has_pooler else (None, None))                      # (B, H)
        return h, pooled, (c_enc, c_pool), rng

    def _backward_encoder(self, dh, dpooled, cache, grads):
        c_enc, c_pool = cache
        if dpooled is not None:
            dh = dh + pooler_backward(dpooled, c_pool, grads, self.base_prefix)
        encoder_backward(dh, c_enc, grads, self.base_prefix, self.config)

    def _forward_outputs(self, input_ids, token_type_ids, attention_mask, training,
                         output_hidden_states, output_attentions):
        """The encoder's pass for forward(): (out, h, pooled, dropout keys or None), `out` holding
        last_hidden_state, pooler_output and the hidden states / attentions asked for."""
        hs, att = _requested(output_hidden_states, output_attentions)
        h, pooled, _, rng = self._encode(input_ids, token_type_ids, attention_mask, training,
                                         keep_cache=False, hidden_states=hs, attentions=att)
        return _add_requested(self._base_outputs(h, pooled), hs, att), h, pooled, rng

    def _base_outputs(self, h, pooled):
        out = {"last_hidden_state": h}
        if pooled is not None:
            out["pooler_output"] = pooled
        return out

    # -- checkpoints --

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, dtype=np.float32, seed: int = 0,
                        strict: bool = False, **config_overrides):
        """Load config.json and weights from a Hugging Face directory.

        Heads absent from the checkpoint are initialised (and listed in a warning and in
        `model.loading_info`); strict=True refuses any difference. `config_overrides` set config
        fields, for example num_labels for a new classification head.

        Nothing is allocated before the checkpoint's declared shapes (safetensors header, the
        pickle's tensor records) have been checked against the config; the weights are then
        read straight into the model's arrays (docs/robustness.md)."""
        directory, dtype, source = Path(directory), _model_dtype(dtype), str(directory)
        config_path = directory / hf.CONFIG_NAME

        def read_config(text):
            config = BertConfig.from_json_file(config_path, text=text)
            return config.overridden(config_overrides) if config_overrides else config
        config, checkpoint = hf.open_pair(directory, read_config)   # saved together, each read once
        with checkpoint:
            hf.check_layer_count(config.num_hidden_layers, checkpoint.tensors, config_path, source)
            expected = cls.param_shapes(config)
            stored = hf.normalize_state_dict(checkpoint.tensors, expected, cls.base_prefix, source)
            scales = quantize.pop_scales(stored, config)   # {} unless saved by a quantized model
            initialised, ignored = hf.check_state_dict(stored, expected, strict, source, config,
                                                       cls.base_prefix)
            wanted = {k: stored[k] for k in expected if k in stored}
            wanted.update({k + quantize.SCALE_SUFFIX: t for k, t in scales.items() if k in wanted})
            arrays = checkpoint.read(wanted, dtype)
        hf.check_finite(arrays, source)
        params = {k: quantize.param_from_checkpoint(arrays[k], arrays.get(k + quantize.SCALE_SUFFIX),
                                                    dtype) for k in expected if k in arrays}
        model = cls(config, seed=seed, dtype=dtype, params=params)
        model.loading_info = {"initialised": initialised, "ignored": ignored}
        if initialised:
            logger.warning("%s: not in %s, initialised: %s", cls.__name__, directory,
                           ", ".join(initialised))
        if ignored:
            logger.warning("%s: in %s but not used: %s", cls.__name__, directory, ", ".join(ignored))
        return model

    def save_pretrained(self, directory: str | os.PathLike, max_shard_size=None) -> None:
        """Write config.json + model.safetensors that transformers' from_pretrained loads; with
        max_shard_size (bytes, or "50KB", "5MB", "2GB") the weights go into shards of at most
        that size plus model.safetensors.index.json, as transformers writes them. Holds the
        directory's lock meanwhile: another process saving into it is refused
        (hf.save_checkpoint)."""
        config = self.config.to_dict()
        config["architectures"] = [type(self).__name__]
        config["dtype"] = self.dtype.name
        hf.save_checkpoint(directory, config, quantize.tensors_to_save(self.params), max_shard_size)


class BertModel(BertPreTrainedModel):
    """The bare encoder with pooler; keys without the "bert." prefix, like a HF BertModel."""

    base_prefix = ""

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, training=False,
                output_hidden_states=False, output_attentions=False):
        out, h, pooled, _ = self._forward_outputs(
            input_ids, token_type_ids, attention_mask, training, output_hidden_states,
            output_attentions)
        return out

    def loss_and_grads(self, *args, **kwargs):
        raise TypeError("BertModel has no loss; use a task model, or backpropagate your own "
                        "gradient of last_hidden_state through bert_np.encoder.encoder_backward")


class BertForPreTraining(BertPreTrainedModel):
    """Encoder + MLM head (decoder tied to the word embeddings) + NSP head."""

    @classmethod
    def param_shapes(cls, cfg):
        shapes = super().param_shapes(cfg)
        shapes.update(mlm_head_shapes(cfg))
        shapes["cls.seq_relationship.weight"] = (2, cfg.hidden_size)
        shapes["cls.seq_relationship.bias"] = (2,)
        return shapes

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, training=False,
                output_hidden_states=False, output_attentions=False):
        out, h, pooled, _ = self._forward_outputs(
            input_ids, token_type_ids, attention_mask, training, output_hidden_states,
            output_attentions)
        out["prediction_logits"], _ = mlm_head_forward(h, self.params, self.config)  # (B, T, V)
        out["seq_relationship_logits"], _ = nsp_head_forward(pooled, self.params)    # (B, 2)
        return out

    def loss_and_grads(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                       next_sentence_label=None, training=False, stats=None, denominators=None,
                       dropout=None, output_hidden_states=False, output_attentions=False):
        """loss = MLM cross-entropy (mean over labels != -100) + NSP cross-entropy.

        The MLM head runs only at the labelled positions (gathered before the vocabulary
        projection, as the original BERT does); the loss equals HF's over the full logits.
        A dict passed as `stats` receives the counts of correct MLM and NSP predictions.
        For a slice of a batch: `denominators` {"mlm", "nsp"} and `dropout` (module docstring)."""
        if labels is None and next_sentence_label is None:
            raise ValueError("loss_and_grads needs labels (MLM) and/or next_sentence_label (NSP)")
        hs, att = _requested(output_hidden_states, output_attentions)
        h, pooled, cache, _ = self._encode(input_ids, token_type_ids, attention_mask, training,
                                           hidden_states=hs, attentions=att, dropout=dropout)
        _add_requested(stats, hs, att)
        B, T, H = h.shape
        grads = {}
        loss, dh, dpooled = 0.0, np.zeros_like(h), None
        if labels is not None:
            mlm_loss, dh_masked, positions = self._mlm_loss(h, labels, grads, stats, denominators)
            loss += mlm_loss
            dh.reshape(B * T, H)[positions] += dh_masked
        if next_sentence_label is not None:
            nsp_loss, c_nsp, c_ce = self._nsp_forward(pooled, next_sentence_label, stats)
            weight = _share(c_ce[3], denominators, "nsp")       # c_ce[3]: the labelled rows
            loss += weight * nsp_loss
            dpooled = nsp_head_backward(cross_entropy_backward(weight, c_ce), c_nsp, grads)
        self._backward_encoder(dh, dpooled, cache, grads)
        return loss, self._complete(grads)

    @staticmethod
    def loss_denominators(labels=None, next_sentence_label=None, **batch) -> dict:
        """The counts the losses' means divide by: masked positions and labelled pairs."""
        return {"mlm": _count_labelled(labels), "nsp": _count_labelled(next_sentence_label)}

    def pretraining_stats(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                          next_sentence_label=None):
        """Forward only, in eval mode: (loss, stats) as loss_and_grads would give them (stats: the
        MLM and NSP correct and total counts), without the backward."""
        h, pooled, _, _ = self._encode(input_ids, token_type_ids, attention_mask, False,
                                       keep_cache=False)
        loss, stats = 0.0, {}
        if labels is not None:
            loss += self._mlm_forward(h, labels, stats)[0]
        if next_sentence_label is not None:
            loss += self._nsp_forward(pooled, next_sentence_label, stats)[0]
        return loss, stats

    def _mlm_forward(self, h, labels, stats=None):
        """MLM head and loss at the labelled positions only: (loss, caches, positions)."""
        B, T, H = h.shape
        labels = check_token_labels(labels, (B, T), self.config.vocab_size).reshape(-1)
        positions = np.flatnonzero(labels != IGNORE_INDEX)                            # (P,)
        h_masked = h.reshape(B * T, H)[positions]                                     # (P, H)
        logits, c_mlm = mlm_head_forward(h_masked, self.params, self.config)         # (P, V)
        loss, c_ce = cross_entropy_forward(logits, labels[positions])
        _count_correct(stats, "mlm", logits, labels[positions])
        return loss, (c_mlm, c_ce), positions

    def _mlm_loss(self, h, labels, grads, stats=None, denominators=None):
        """MLM loss and its backward; returns (loss, dh at the labelled positions, positions),
        the loss weighted by its share of the whole batch's masked positions (`denominators`)."""
        loss, (c_mlm, c_ce), positions = self._mlm_forward(h, labels, stats)
        weight = _share(len(positions), denominators, "mlm")
        dh_masked = mlm_head_backward(cross_entropy_backward(weight, c_ce), c_mlm, grads,
                                      self.config)
        return weight * loss, dh_masked, positions

    def _nsp_forward(self, pooled, next_sentence_label, stats=None):
        """NSP head and loss: (loss, head cache, loss cache)."""
        nsp_labels = check_token_labels(next_sentence_label, (pooled.shape[0],), 2,
                                        "next_sentence_label")
        logits, c_nsp = nsp_head_forward(pooled, self.params)                         # (B, 2)
        loss, c_ce = cross_entropy_forward(logits, nsp_labels)
        _count_correct(stats, "nsp", logits, nsp_labels)
        return loss, c_nsp, c_ce


class BertForMaskedLM(BertForPreTraining):
    """Encoder (no pooler, as in HF) + MLM head; output `logits` (B, T, V)."""

    has_pooler = False

    @classmethod
    def param_shapes(cls, cfg):
        shapes = encoder_shapes(cfg, cls.base_prefix, cls.has_pooler)
        shapes.update(mlm_head_shapes(cfg))
        return shapes

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, training=False,
                output_hidden_states=False, output_attentions=False):
        out, h, _, _ = self._forward_outputs(
            input_ids, token_type_ids, attention_mask, training, output_hidden_states,
            output_attentions)
        out["logits"], _ = mlm_head_forward(h, self.params, self.config)              # (B, T, V)
        return out

    def loss_and_grads(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                       training=False, stats=None, denominators=None, dropout=None,
                       output_hidden_states=False, output_attentions=False):
        """loss = MLM cross-entropy, mean over labels != -100 (`stats`, `denominators`, `dropout`:
        see BertForPreTraining)."""
        if labels is None:
            raise ValueError("BertForMaskedLM.loss_and_grads needs labels")
        hs, att = _requested(output_hidden_states, output_attentions)
        h, _, cache, _ = self._encode(input_ids, token_type_ids, attention_mask, training,
                                      hidden_states=hs, attentions=att, dropout=dropout)
        _add_requested(stats, hs, att)
        B, T, H = h.shape
        grads = {}
        loss, dh_masked, positions = self._mlm_loss(h, labels, grads, stats, denominators)
        dh = np.zeros_like(h)
        dh.reshape(B * T, H)[positions] += dh_masked
        self._backward_encoder(dh, None, cache, grads)
        return loss, self._complete(grads)


class BertForSequenceClassification(BertPreTrainedModel):
    """Encoder + pooler + dropout + linear classifier: logits (B, num_labels).

    The loss follows config.problem_type, decided as transformers decides it when None:
      "regression" (None and num_labels == 1): mean squared error; labels (B,), or (B, C) reals
          for C > 1 outputs;
      "single_label_classification" (None and integer labels): cross-entropy, labels (B,) ids;
      "multi_label_classification" (None and real labels (B, C)): binary cross-entropy with
          logits, mean over every element; labels (B, C) in [0, 1].
    (With problem_type None, real labels of shape (B,) holding whole numbers are read as class
    ids, where transformers would try the multi-label loss and fail on the shape.)

    `num_labels`, when given, replaces the config's (and drops its label names if their number
    differs), as `from_pretrained(..., num_labels=...)` does."""

    def __init__(self, config: BertConfig, seed: int = 0, dtype=np.float32,
                 num_labels: int | None = None, *, params: dict | None = None):
        if num_labels is not None and isinstance(config, BertConfig) \
                and num_labels != config.num_labels:
            config = dataclasses.replace(config, num_labels=num_labels, id2label=None)
        super().__init__(config, seed=seed, dtype=dtype, params=params)

    @classmethod
    def param_shapes(cls, cfg):
        shapes = super().param_shapes(cfg)
        shapes["classifier.weight"] = (cfg.num_labels, cfg.hidden_size)
        shapes["classifier.bias"] = (cfg.num_labels,)
        return shapes

    @property
    def _classifier_dropout(self):
        cfg = self.config
        return cfg.hidden_dropout_prob if cfg.classifier_dropout is None else cfg.classifier_dropout

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, training=False,
                output_hidden_states=False, output_attentions=False):
        out, h, pooled, rng = self._forward_outputs(
            input_ids, token_type_ids, attention_mask, training, output_hidden_states,
            output_attentions)
        out["logits"], _ = classifier_head_forward(pooled, self.params, self._classifier_dropout, rng)
        return out

    def problem_type_for(self, labels) -> str:
        """config.problem_type, or what transformers infers from num_labels and the labels."""
        cfg = self.config
        if cfg.problem_type is not None:
            return cfg.problem_type
        if cfg.num_labels == 1:
            return "regression"
        try:
            arr = np.asarray(labels)
        except ValueError:           # ragged: the label check reports it
            return "single_label_classification"
        if np.issubdtype(arr.dtype, np.floating) and arr.ndim == 2 and arr.shape[1] == cfg.num_labels:
            return "multi_label_classification"
        return "single_label_classification"

    def loss_and_grads(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                       teacher_logits=None, temperature=1.0, alpha=1.0, training=False,
                       stats=None, denominators=None, dropout=None, output_hidden_states=False,
                       output_attentions=False):
        """The loss and the gradient of every parameter. With labels only: the loss of the
        problem type (class docstring). With teacher_logits (distillation, Hinton et al. 2015):

            loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * label loss

        averaged over the batch, T = temperature, t the teacher's logits; for regression the
        teacher's term is the squared error to the teacher's score. labels may be None when
        alpha == 1. A dict passed as `stats` receives the batch's logits. For a slice of a batch:
        `denominators` {"rows", "labels"} and `dropout` (module docstring)."""
        input_ids, token_type_ids, attention_mask = check_inputs(
            self.config, input_ids, token_type_ids, attention_mask)
        B, C = input_ids.shape[0], self.config.num_labels
        if teacher_logits is not None:
            teacher, temperature, alpha = check_distillation(
                teacher_logits, temperature, alpha, labels, B, C, self.dtype)
            if self.config.problem_type == "multi_label_classification":
                raise ValueError("teacher_logits: distillation of a multi-label classifier is not "
                                 "supported (the soft targets are one softmax over the labels)")
        elif labels is None:
            raise ValueError("BertForSequenceClassification.loss_and_grads needs labels (or "
                             "teacher_logits, for distillation)")
        else:
            alpha = 0.0                                        # the label term alone
        hs, att = _requested(output_hidden_states, output_attentions)
        h, pooled, cache, rng = self._encode(input_ids, token_type_ids, attention_mask, training,
                                             hidden_states=hs, attentions=att, checked=True,
                                             dropout=dropout)
        grads = {}
        rows = _share(B, denominators, "rows")                # this slice's share of the batch
        logits, c_head = classifier_head_forward(pooled, self.params, self._classifier_dropout, rng)
        loss, dlogits = 0.0, np.zeros_like(logits)                                    # (B, C)
        if alpha > 0.0:                                          # the teacher's term
            if C == 1:
                soft, c_soft = mse_forward(logits[:, 0], teacher[:, 0])
                dlogits[:, 0] += mse_backward(alpha * rows, c_soft)
            else:
                soft, c_soft = soft_cross_entropy_forward(logits, teacher, temperature)
                dlogits += soft_cross_entropy_backward(alpha * rows, c_soft)
            loss += alpha * rows * soft
        if alpha < 1.0:                                          # the label term
            hard, weight, dhard = self._label_loss(logits, labels, 1.0 - alpha, denominators)
            dlogits += dhard
            loss += weight * hard
        if stats is not None:
            stats["logits"] = logits
            _add_requested(stats, hs, att)
        dpooled = classifier_head_backward(dlogits, c_head, grads)
        self._backward_encoder(np.zeros_like(h), dpooled, cache, grads)
        return float(loss), self._complete(grads)

    def loss_denominators(self, input_ids, labels=None, **batch) -> dict:
        """The counts the losses' means divide by: rows (the teacher's term, MSE) and labelled
        rows (cross-entropy)."""
        B = len(input_ids)
        return {"rows": B, "labels": B if self.config.num_labels == 1 else _count_labelled(labels)}

    def _label_loss(self, logits, labels, weight, denominators=None):
        """(loss, w, w * dloss/dlogits) of the problem type's loss against the labels, with
        w = weight * this slice's share of the batch's labels (`denominators`, module docstring)."""
        B, C = logits.shape
        problem = self.problem_type_for(labels)
        if problem == "regression" and C == 1:
            target = check_regression_labels(labels, B, self.dtype)
            loss, c_loss = mse_forward(logits[:, 0], target)
            w = weight * _share(target.size, denominators, "labels")
            return loss, w, mse_backward(w, c_loss)[:, None]                              # (B, 1)
        if problem in ("regression", "multi_label_classification"):
            target = check_real_labels(labels, (B, C), self.dtype, what=problem)
            forward, backward = ((mse_forward, mse_backward) if problem == "regression" else
                                 (bce_with_logits_forward, bce_with_logits_backward))
            loss, c_loss = forward(logits, target)
            w = weight * _share(target.size, denominators, "labels")
            return loss, w, backward(w, c_loss)                                           # (B, C)
        target = check_token_labels(labels, (B,), C)
        loss, c_loss = cross_entropy_forward(logits, target)
        w = weight * _share(c_loss[3], denominators, "labels")                # labelled rows
        return loss, w, cross_entropy_backward(w, c_loss)                                 # (B, C)


def classifier_dropout(cfg: BertConfig) -> float:
    """The dropout before a classifier: config.classifier_dropout, else hidden_dropout_prob."""
    return cfg.hidden_dropout_prob if cfg.classifier_dropout is None else cfg.classifier_dropout


class BertForTokenClassification(BertPreTrainedModel):
    """Encoder (no pooler, as in HF) + dropout + Linear(H, num_labels) at every position:
    logits (B, T, C). Loss: cross-entropy over the positions whose label is not -100 (mark
    padding and continuation word pieces -100)."""

    has_pooler = False

    @classmethod
    def param_shapes(cls, cfg):
        shapes = super().param_shapes(cfg)
        shapes["classifier.weight"] = (cfg.num_labels, cfg.hidden_size)
        shapes["classifier.bias"] = (cfg.num_labels,)
        return shapes

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, training=False,
                output_hidden_states=False, output_attentions=False):
        out, h, _, rng = self._forward_outputs(
            input_ids, token_type_ids, attention_mask, training, output_hidden_states,
            output_attentions)
        out["logits"], _ = classifier_head_forward(h, self.params, classifier_dropout(self.config),
                                                   rng)                               # (B, T, C)
        return out

    def loss_and_grads(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                       training=False, stats=None, output_hidden_states=False,
                       output_attentions=False):
        """labels (B, T): class ids, -100 where no label. `stats` receives the logits and the
        counts of correct predictions (token_correct, token_total)."""
        if labels is None:
            raise ValueError("BertForTokenClassification.loss_and_grads needs labels")
        hs, att = _requested(output_hidden_states, output_attentions)
        h, _, cache, rng = self._encode(input_ids, token_type_ids, attention_mask, training,
                                        hidden_states=hs, attentions=att)
        B, T, H = h.shape
        C = self.config.num_labels
        target = check_token_labels(labels, (B, T), C).reshape(B * T)
        grads = {}
        logits, c_head = classifier_head_forward(h, self.params, classifier_dropout(self.config),
                                                 rng)                                 # (B, T, C)
        loss, c_loss = cross_entropy_forward(logits.reshape(B * T, C), target)
        dlogits = cross_entropy_backward(1.0, c_loss).reshape(B, T, C)
        if stats is not None:
            stats["logits"] = logits
            _count_correct(stats, "token", logits.reshape(B * T, C), target)
            _add_requested(stats, hs, att)
        dh = classifier_head_backward(dlogits, c_head, grads)                         # (B, T, H)
        self._backward_encoder(dh, None, cache, grads)
        return loss, self._complete(grads)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Encoder (no pooler, as in HF) + qa_outputs Linear(H, 2) at every position, split into
    start_logits and end_logits (B, T) (no dropout, as in HF).

    Loss (transformers' definition): the positions are clamped to [0, T] and T is the ignore
    index (an answer outside the input); loss = (CE(start_logits, start_positions) +
    CE(end_logits, end_positions)) / 2, each a mean over its kept rows."""

    has_pooler = False

    def __init__(self, config: BertConfig, seed: int = 0, dtype=np.float32, *,
                 params: dict | None = None):
        if isinstance(config, BertConfig) and config.num_labels != 2:
            raise ValueError(f"BertForQuestionAnswering needs config.num_labels == 2 (start and "
                             f"end logits), got {config.num_labels}")
        super().__init__(config, seed, dtype, params=params)

    @classmethod
    def param_shapes(cls, cfg):
        shapes = super().param_shapes(cfg)
        shapes["qa_outputs.weight"] = (2, cfg.hidden_size)
        shapes["qa_outputs.bias"] = (2,)
        return shapes

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, training=False,
                output_hidden_states=False, output_attentions=False):
        out, h, _, _ = self._forward_outputs(
            input_ids, token_type_ids, attention_mask, training, output_hidden_states,
            output_attentions)
        out["start_logits"], out["end_logits"], _ = span_head_forward(h, self.params)  # (B, T) x2
        return out

    def loss_and_grads(self, input_ids, token_type_ids=None, attention_mask=None,
                       start_positions=None, end_positions=None, training=False, stats=None,
                       output_hidden_states=False, output_attentions=False):
        """start_positions, end_positions (B,): token indices of the answer span. `stats`
        receives start_logits and end_logits."""
        if start_positions is None or end_positions is None:
            raise ValueError("BertForQuestionAnswering.loss_and_grads needs start_positions and "
                             "end_positions")
        hs, att = _requested(output_hidden_states, output_attentions)
        h, _, cache, _ = self._encode(input_ids, token_type_ids, attention_mask, training,
                                      hidden_states=hs, attentions=att)
        B, T, _ = h.shape
        starts = check_span_positions(start_positions, B, T, "start_positions")      # (B,)
        ends = check_span_positions(end_positions, B, T, "end_positions")
        grads = {}
        start_logits, end_logits, c_head = span_head_forward(h, self.params)          # (B, T) x2
        start_loss, c_start = cross_entropy_forward(start_logits, starts, ignore_index=T)
        end_loss, c_end = cross_entropy_forward(end_logits, ends, ignore_index=T)
        loss = (start_loss + end_loss) / 2
        if stats is not None:
            stats["start_logits"], stats["end_logits"] = start_logits, end_logits
            _add_requested(stats, hs, att)
        dh = span_head_backward(cross_entropy_backward(0.5, c_start),                 # loss = (s + e) / 2
                                cross_entropy_backward(0.5, c_end), c_head, grads)
        self._backward_encoder(dh, None, cache, grads)
        return loss, self._complete(grads)


class BertForMultipleChoice(BertPreTrainedModel):
    """C candidate inputs per example: input_ids (B, C, T) are flattened to (B*C, T), encoded,
    pooled, dropout, Linear(H, 1): logits (B, C); loss: cross-entropy over the C choices,
    labels (B,) in [0, C). hidden_states and attentions have the flattened batch B*C, as in HF."""

    @classmethod
    def param_shapes(cls, cfg):
        shapes = super().param_shapes(cfg)
        shapes["classifier.weight"] = (1, cfg.hidden_size)
        shapes["classifier.bias"] = (1,)
        return shapes

    def _choices(self, input_ids, token_type_ids, attention_mask, training, keep_cache, hs, att):
        *flat, (B, C) = check_choice_inputs(self.config, input_ids, token_type_ids, attention_mask)
        h, pooled, cache, rng = self._encode(*flat, training, keep_cache=keep_cache,
                                             hidden_states=hs, attentions=att, checked=True)
        logits, c_head = classifier_head_forward(pooled, self.params,
                                                 classifier_dropout(self.config), rng)  # (B*C, 1)
        return h, pooled, cache, logits.reshape(B, C), c_head

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, training=False,
                output_hidden_states=False, output_attentions=False):
        hs, att = _requested(output_hidden_states, output_attentions)
        h, pooled, _, logits, _ = self._choices(input_ids, token_type_ids, attention_mask,
                                                training, False, hs, att)
        out = self._base_outputs(h, pooled)                 # (B*C, T, H), (B*C, H)
        out["logits"] = logits                              # (B, C)
        return _add_requested(out, hs, att)

    def loss_and_grads(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                       training=False, stats=None, output_hidden_states=False,
                       output_attentions=False):
        """labels (B,): the index of the right choice. `stats` receives the logits."""
        if labels is None:
            raise ValueError("BertForMultipleChoice.loss_and_grads needs labels")
        hs, att = _requested(output_hidden_states, output_attentions)
        h, _, cache, logits, c_head = self._choices(input_ids, token_type_ids, attention_mask,
                                                    training, True, hs, att)
        B, C = logits.shape
        target = check_token_labels(labels, (B,), C)
        grads = {}
        loss, c_loss = cross_entropy_forward(logits, target)
        dlogits = cross_entropy_backward(1.0, c_loss).reshape(B * C, 1)
        if stats is not None:
            stats["logits"] = logits
            _add_requested(stats, hs, att)
        dpooled = classifier_head_backward(dlogits, c_head, grads)                    # (B*C, H)
        self._backward_encoder(np.zeros_like(h), dpooled, cache, grads)
        return loss, self._complete(grads)


class BertForNextSentencePrediction(BertPreTrainedModel):
    """Encoder + pooler + cls.seq_relationship: seq_relationship_logits (B, 2), also under
    transformers' name for this class, logits; labels (B,): 0 when segment B follows segment A,
    1 when B is a random sentence."""

    @classmethod
    def param_shapes(cls, cfg):
        shapes = super().param_shapes(cfg)
        shapes["cls.seq_relationship.weight"] = (2, cfg.hidden_size)
        shapes["cls.seq_relationship.bias"] = (2,)
        return shapes

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, training=False,
                output_hidden_states=False, output_attentions=False):
        out, h, pooled, _ = self._forward_outputs(
            input_ids, token_type_ids, attention_mask, training, output_hidden_states,
            output_attentions)
        out["seq_relationship_logits"], _ = nsp_head_forward(pooled, self.params)    # (B, 2)
        out["logits"] = out["seq_relationship_logits"]     # transformers' name in this class
        return out

    def loss_and_grads(self, input_ids, token_type_ids=None, attention_mask=None, labels=None,
                       training=False, stats=None, output_hidden_states=False,
                       output_attentions=False):
        """Cross-entropy of the NSP logits; `stats` receives nsp_correct and nsp_total."""
        if labels is None:
            raise ValueError("BertForNextSentencePrediction.loss_and_grads needs labels")
        hs, att = _requested(output_hidden_states, output_attentions)
        h, pooled, cache, _ = self._encode(input_ids, token_type_ids, attention_mask, training,
                                           hidden_states=hs, attentions=att)
        target = check_token_labels(labels, (pooled.shape[0],), 2)
        grads = {}
        logits, c_nsp = nsp_head_forward(pooled, self.params)                         # (B, 2)
        loss, c_loss = cross_entropy_forward(logits, target)
        _count_correct(stats, "nsp", logits, target)
        _add_requested(stats, hs, att)
        dpooled = nsp_head_backward(cross_entropy_backward(1.0, c_loss), c_nsp, grads)
        self._backward_encoder(np.zeros_like(h), dpooled, cache, grads)
        return loss, self._complete(grads)
