"""Task heads on top of the encoder, each a forward/backward pair.

MLM head (cls.predictions), applied to hidden states h (N, H) at the positions it predicts:
    t = LayerNorm(act(h Wt^T + bt));   logits = t E_word^T + b_vocab       (N, V)
The decoder weight is the word-embedding table E_word itself (tied), so its gradient is added to
the embedding gradient: the tied gradient is the sum of both uses. With
config.tie_word_embeddings False the decoder is a Linear of its own, cls.predictions.decoder.weight
and .bias (as transformers 5 unties both; cls.predictions.bias is then unused).

NSP head (cls.seq_relationship):      logits = pooled Wn^T + bn           (B, 2)
Classification head (classifier):     logits = dropout(x) Wc^T + bc
    on the pooled output (B, H) -> (B, num_labels) for sequence classification, on every position
    (B, T, H) -> (B, T, num_labels) for token classification, on each choice's pooled output
    (B*C, H) -> (B*C, 1) for multiple choice
Span head (qa_outputs):               [s, e] = h Wq^T + bq                (B, T, 2) -> two (B, T)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .encoder import add_grad, add_grads
from .layers import (dropout_backward, dropout_forward, layernorm_backward, layernorm_forward,
                     linear_act_backward, linear_act_forward, linear_backward, linear_forward)

WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"


class MlmHeadCache(NamedTuple):
    transform: tuple            # t = act(h Wt^T + bt)
    norm: tuple                 # t = LayerNorm(t)
    decoder: tuple              # logits = t E^T + b


def decoder_keys(cfg):
    """(weight, bias) names of the MLM decoder: the word embeddings and cls.predictions.bias when
    tied, cls.predictions.decoder.weight / .bias when config.tie_word_embeddings is False."""
    if cfg.tie_word_embeddings:
        return WORD_EMBEDDINGS, "cls.predictions.bias"
    return "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"


def mlm_head_forward(h, params, cfg):
    """h (N, H) or (B, T, H) -> logits (N, V) or (B, T, V), MlmHeadCache."""
    p = "cls.predictions."
    t, c_transform = linear_act_forward(h, params[p + "transform.dense.weight"],
                                        params[p + "transform.dense.bias"], cfg.hidden_act)  # (N, H)
    t, c_norm = layernorm_forward(t, params[p + "transform.LayerNorm.weight"],
                                  params[p + "transform.LayerNorm.bias"], cfg.layer_norm_eps)
    w_dec, b_dec = decoder_keys(cfg)
    logits, c_decoder = linear_forward(t, params[w_dec], params[b_dec])                 # (N, V)
    return logits, MlmHeadCache(c_transform, c_norm, c_decoder)


def mlm_head_backward(dlogits, cache: MlmHeadCache, grads, cfg):
    """Returns dh; adds the decoder gradient into the (tied) word-embedding gradient."""
    p = "cls.predictions."
    w_dec, b_dec = decoder_keys(cfg)
    dt, dw_dec, db_vocab = linear_backward(dlogits, cache.decoder)  # logits = t E^T + b
    add_grad(grads, w_dec, dw_dec)                          # tied: the encoder adds its part
    add_grad(grads, b_dec, db_vocab)
    dt, dw, db = layernorm_backward(dt, cache.norm)         # t = LN(t)
    add_grads(grads, p + "transform.LayerNorm", dw, db)
    dh, dw, db = linear_act_backward(dt, cache.transform)   # t = act(h Wt^T + bt)
    add_grads(grads, p + "transform.dense", dw, db)
    return dh


def nsp_head_forward(pooled, params):
    """pooled (B, H) -> logits (B, 2): label 0 means segment B follows A."""
    return linear_forward(pooled, params["cls.seq_relationship.weight"],
                          params["cls.seq_relationship.bias"])


def nsp_head_backward(dlogits, cache, grads):
    dpooled, dw, db = linear_backward(dlogits, cache)
    add_grads(grads, "cls.seq_relationship", dw, db)
    return dpooled


class ClassifierHeadCache(NamedTuple):
    dropout: object             # x = dropout(pooled)
    dense: tuple                # logits = x Wc^T + bc


def classifier_head_forward(pooled, params, dropout_p, rng):
    """pooled (B, H) -> logits (B, num_labels), ClassifierHeadCache; any leading shape works:
    (B, T, H) -> (B, T, num_labels) for token classification."""
    x, c_dropout = dropout_forward(pooled, dropout_p, rng)
    logits, c_dense = linear_forward(x, params["classifier.weight"], params["classifier.bias"])
    return logits, ClassifierHeadCache(c_dropout, c_dense)


def classifier_head_backward(dlogits, cache: ClassifierHeadCache, grads):
    dx, dw, db = linear_backward(dlogits, cache.dense)      # logits = x Wc^T + bc
    add_grads(grads, "classifier", dw, db)
    return dropout_backward(dx, cache.dropout)              # x = dropout(pooled)


def span_head_forward(h, params):
    """h (B, T, H) -> start_logits (B, T), end_logits (B, T), cache (question answering)."""
    logits, c_dense = linear_forward(h, params["qa_outputs.weight"], params["qa_outputs.bias"])
    return logits[..., 0], logits[..., 1], c_dense                                   # (B, T) each


def span_head_backward(dstart, dend, cache, grads):
    """dstart, dend (B, T) -> dh (B, T, H)."""
    dlogits = np.stack([dstart, dend], axis=-1)             # [s, e] = logits[..., 0], [..., 1]
    dh, dw, db = linear_backward(dlogits, cache)            # logits = h Wq^T + bq
    add_grads(grads, "qa_outputs", dw, db)
    return dh
