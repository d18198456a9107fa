"""Task heads on top of the encoder, each a forward/backward pair.

MLM head (cls.predictions), applied to hidden states h (N, H) at the positions it predicts:
    t = LayerNorm(act(h Wt^T + bt));   logits = t E_word^T + b_vocab       (N, V)
The decoder weight is the word-embedding table E_word itself (tied), so its gradient is added to
the embedding gradient: the tied gradient is the sum of both uses.

NSP head (cls.seq_relationship):      logits = pooled Wn^T + bn           (B, 2)
Classification head (classifier):     logits = dropout(pooled) Wc^T + bc  (B, num_labels)
"""
from __future__ import annotations

from .layers import (ACTIVATIONS, dropout_backward, dropout_forward, layernorm_backward,
                     layernorm_forward, linear_backward, linear_forward)
from .encoder import add_grad, add_grads

WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"


def mlm_head_forward(h, params, cfg):
    """h (N, H) or (B, T, H) -> logits (N, V) or (B, T, V), cache."""
    act_forward, _ = ACTIVATIONS[cfg.hidden_act]
    p = "cls.predictions."
    t, c_dense = linear_forward(h, params[p + "transform.dense.weight"],
                                params[p + "transform.dense.bias"])                   # (N, H)
    t, c_act = act_forward(t)
    t, c_ln = layernorm_forward(t, params[p + "transform.LayerNorm.weight"],
                                params[p + "transform.LayerNorm.bias"], cfg.layer_norm_eps)
    logits, c_dec = linear_forward(t, params[WORD_EMBEDDINGS], params[p + "bias"])   # (N, V)
    return logits, (c_dense, c_act, c_ln, c_dec)


def mlm_head_backward(dlogits, cache, grads, cfg):
    """Returns dh; adds the decoder gradient into the (tied) word-embedding gradient."""
    _, act_backward = ACTIVATIONS[cfg.hidden_act]
    p = "cls.predictions."
    c_dense, c_act, c_ln, c_dec = cache
    dt, dw_dec, db_vocab = linear_backward(dlogits, c_dec)  # logits = t E^T + b
    add_grad(grads, WORD_EMBEDDINGS, dw_dec)                # tied: the encoder adds its part
    add_grad(grads, p + "bias", db_vocab)
    dt, dw, db = layernorm_backward(dt, c_ln)               # t = LN(t)
    add_grads(grads, p + "transform.LayerNorm", dw, db)
    dt = act_backward(dt, c_act)                            # t = act(t)
    dh, dw, db = linear_backward(dt, c_dense)               # t = h Wt^T + bt
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


def classifier_head_forward(pooled, params, dropout_p, rng):
    """pooled (B, H) -> logits (B, num_labels)."""
    x, c_drop = dropout_forward(pooled, dropout_p, rng)
    logits, c_lin = linear_forward(x, params["classifier.weight"], params["classifier.bias"])
    return logits, (c_drop, c_lin)


def classifier_head_backward(dlogits, cache, grads):
    c_drop, c_lin = cache
    dx, dw, db = linear_backward(dlogits, c_lin)
    add_grads(grads, "classifier", dw, db)
    return dropout_backward(dx, c_drop)
