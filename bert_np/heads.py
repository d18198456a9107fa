"""Task heads on top of the encoder, each a forward/backward pair.

MLM head (cls.predictions), applied to hidden states h (N, H) at the positions it predicts:
    t = LayerNorm(act(h Wt^T + bt));   logits = t E_word^T + b_vocab       (N, V)
The decoder weight is the word-embedding table E_word itself (tied), so its gradient is added to
the embedding gradient: the tied gradient is the sum of both uses.

NSP head (cls.seq_relationship):      logits = pooled Wn^T + bn           (B, 2)
Classification head (classifier):     logits = dropout(pooled) Wc^T + bc  (B, num_labels)
"""
from __future__ import annotations

from typing import NamedTuple

from .encoder import add_grad, add_grads
from .layers import (dropout_backward, dropout_forward, layernorm_backward, layernorm_forward,
                     linear_act_backward, linear_act_forward, linear_backward, linear_forward)

WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"


class MlmHeadCache(NamedTuple):
    transform: tuple            # t = act(h Wt^T + bt)
    norm: tuple                 # t = LayerNorm(t)
    decoder: tuple              # logits = t E^T + b


def mlm_head_forward(h, params, cfg):
    """h (N, H) or (B, T, H) -> logits (N, V) or (B, T, V), MlmHeadCache."""
    p = "cls.predictions."
    t, c_transform = linear_act_forward(h, params[p + "transform.dense.weight"],
                                        params[p + "transform.dense.bias"], cfg.hidden_act)  # (N, H)
    t, c_norm = layernorm_forward(t, params[p + "transform.LayerNorm.weight"],
                                  params[p + "transform.LayerNorm.bias"], cfg.layer_norm_eps)
    logits, c_decoder = linear_forward(t, params[WORD_EMBEDDINGS], params[p + "bias"])  # (N, V)
    return logits, MlmHeadCache(c_transform, c_norm, c_decoder)


def mlm_head_backward(dlogits, cache: MlmHeadCache, grads, cfg):
    """Returns dh; adds the decoder gradient into the (tied) word-embedding gradient."""
    p = "cls.predictions."
    dt, dw_dec, db_vocab = linear_backward(dlogits, cache.decoder)  # logits = t E^T + b
    add_grad(grads, WORD_EMBEDDINGS, dw_dec)                # tied: the encoder adds its part
    add_grad(grads, p + "bias", db_vocab)
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
    """pooled (B, H) -> logits (B, num_labels), ClassifierHeadCache."""
    x, c_dropout = dropout_forward(pooled, dropout_p, rng)
    logits, c_dense = linear_forward(x, params["classifier.weight"], params["classifier.bias"])
    return logits, ClassifierHeadCache(c_dropout, c_dense)


def classifier_head_backward(dlogits, cache: ClassifierHeadCache, grads):
    dx, dw, db = linear_backward(dlogits, cache.dense)      # logits = x Wc^T + bc
    add_grads(grads, "classifier", dw, db)
    return dropout_backward(dx, cache.dropout)              # x = dropout(pooled)
