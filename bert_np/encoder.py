"""The BERT encoder: embeddings, N post-LN transformer layers, pooler.

Each forward is a list of layer calls that returns its output and a cache; each backward walks the
same list in reverse, one line per forward line, and adds parameter gradients into `grads` (a dict
keyed like `params`) with `add_grad`: a parameter's first gradient is stored as it is, later ones
are added to it, so tied or shared weights need no special case and no gradient is first zeroed
and then added to (at BERT-base size that saved a 440 MB zero-fill and an add per step).

Parameter names are Hugging Face's state_dict keys; `prefix` is "bert." inside the task models and
"" for a bare BertModel.

    embeddings:  x = LayerNorm(E_word[ids] + E_pos[0..T-1] + E_type[types]);  x = dropout(x)
    layer:       h = LayerNorm(dropout(Attention(x) Wo^T + bo) + x)
                 y = LayerNorm(dropout(act(h Wi^T + bi) Wo2^T + bo2) + h)
    pooler:      pooled = tanh(h[:, 0] Wp^T + bp)
Each forward returns a named cache (a NamedTuple) whose fields the backward reads by name.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .layers import (add_layernorm_forward, attention_backward, attention_forward,
                     dropout_backward, dropout_forward, embedding_backward,
                     embeddings_layernorm_forward, feed_forward, layernorm_backward,
                     linear_act_backward, linear_backward, linear_forward, tanh_backward,
                     tanh_forward)


def add_grad(grads, name, g):
    """grads[name] += g, or grads[name] = g if it is the parameter's first gradient (g is a fresh
    array the caller hands over)."""
    if name in grads:
        grads[name] += g
    else:
        grads[name] = g


def add_grads(grads, name, dw, db):
    """grads[name.weight] += dw; grads[name.bias] += db."""
    add_grad(grads, name + ".weight", dw)
    add_grad(grads, name + ".bias", db)


def grad_buffer(grads, name, shape, dtype):
    """grads[name], created as zeros if absent: for the embedding tables, whose gradients are
    scatter-added in place."""
    if name not in grads:
        grads[name] = np.zeros(shape, dtype)
    return grads[name]


class EmbeddingsCache(NamedTuple):
    input_ids: np.ndarray       # (B, T)
    token_type_ids: np.ndarray  # (B, T)
    norm: tuple                 # LayerNorm's cache
    dropout: object             # dropout's cache


def embeddings_forward(input_ids, token_type_ids, params, prefix, cfg, rng):
    """input_ids, token_type_ids (B, T) -> (x (B, T, H), cache)."""
    p = prefix + "embeddings."
    x, cache_ln = embeddings_layernorm_forward(    # LayerNorm(E_word[ids] + E_pos[t] + E_type[types])
        input_ids, token_type_ids, params[p + "word_embeddings.weight"],
        params[p + "position_embeddings.weight"], params[p + "token_type_embeddings.weight"],
        params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"], cfg.layer_norm_eps)  # (B, T, H)
    x, cache_drop = dropout_forward(x, cfg.hidden_dropout_prob, rng)
    return x, EmbeddingsCache(input_ids, token_type_ids, cache_ln, cache_drop)


def embeddings_backward(dx, cache: EmbeddingsCache, grads, prefix, cfg):
    p = prefix + "embeddings."
    dx = dropout_backward(dx, cache.dropout)                # x = dropout(x)
    dx, dw, db = layernorm_backward(dx, cache.norm)         # x = LayerNorm(x)
    add_grads(grads, p + "LayerNorm", dw, db)
    H, dtype = dx.shape[-1], dx.dtype
    embedding_backward(dx, cache.token_type_ids,            # x += E_type[types]
                       grad_buffer(grads, p + "token_type_embeddings.weight",
                                   (cfg.type_vocab_size, H), dtype))
    grad_buffer(grads, p + "position_embeddings.weight",    # x = ... + E_pos[0..T-1]
                (cfg.max_position_embeddings, H), dtype)[:dx.shape[1]] += dx.sum(axis=0)  # (T, H)
    embedding_backward(dx, cache.input_ids,                 # x = E_word[ids]
                       grad_buffer(grads, p + "word_embeddings.weight", (cfg.vocab_size, H), dtype),
                       cfg.pad_token_id)


class LayerCache(NamedTuple):
    """The caches of one transformer layer, in the order of layer_forward's lines."""
    attention: object           # ctx = Attention(x)
    attention_dense: tuple      # a = ctx Wo^T + bo
    attention_dropout: object   # a = dropout(a)
    attention_norm: tuple       # h = LayerNorm(a + x)
    intermediate: tuple         # g = act(h Wi^T + bi)       (feed_forward's two caches)
    output_dense: tuple         # o = g Wo2^T + bo2
    output_dropout: object      # o = dropout(o)
    output_norm: tuple          # y = LayerNorm(o + h)


def layer_forward(x, mask_bias, params, prefix, cfg, rng, *, keep_cache=True, attentions=None):
    """One transformer layer: (B, T, H) -> (B, T, H); `prefix` ends with "encoder.layer.{i}.".
    With keep_cache=False (inference) the cache returned is None.

    A list passed as `attentions` receives this layer's attention probabilities (B, A, T, T)
    after dropout (P', equal to P without dropout), as transformers' output_attentions: in
    inference the attention then keeps its probabilities for this one call."""
    h, c_attention = attention_sublayer_forward(x, mask_bias, params, prefix, cfg, rng,
                                                keep_cache=keep_cache, attentions=attentions)
    y, c_feed_forward = feed_forward_sublayer_forward(h, params, prefix, cfg, rng,
                                                      keep_cache=keep_cache)
    if not keep_cache:
        return y, None
    return y, LayerCache(*c_attention, *c_feed_forward)


def _weight_and_bias(params, prefix):
    """w("attention.output.dense") -> (its weight, its bias) in the layer named by `prefix`."""
    return lambda name: (params[prefix + name + ".weight"], params[prefix + name + ".bias"])


def attention_sublayer_forward(x, mask_bias, params, prefix, cfg, rng, *, keep_cache=True,
                               attentions=None):
    """h = LayerNorm(dropout(Attention(x) Wo^T + bo) + x): (B, T, H) -> (B, T, H), and its four
    caches (None with keep_cache=False: the context and the projection are then freed when it
    returns, before the feed-forward sublayer allocates its own activations)."""
    w = _weight_and_bias(params, prefix)
    ctx, c_attention = attention_forward(
        x, *w("attention.self.query"), *w("attention.self.key"), *w("attention.self.value"),
        mask_bias, cfg.num_attention_heads, cfg.attention_probs_dropout_prob, rng,
        keep_cache=keep_cache or attentions is not None)                              # (B, T, H)
    if attentions is not None:
        attentions.append(c_attention.probs_dropped)                                  # P' (B, A, T, T)
    a, c_attention_dense = linear_forward(ctx, *w("attention.output.dense"))          # (B, T, H)
    a, c_attention_dropout = dropout_forward(a, cfg.hidden_dropout_prob, rng)
    h, c_attention_norm = add_layernorm_forward(a, x, *w("attention.output.LayerNorm"),
                                                cfg.layer_norm_eps)                   # LN(a + x)
    if not keep_cache:
        return h, None
    return h, (c_attention, c_attention_dense, c_attention_dropout, c_attention_norm)


def feed_forward_sublayer_forward(h, params, prefix, cfg, rng, *, keep_cache=True):
    """y = LayerNorm(dropout(act(h Wi^T + bi) Wo2^T + bo2) + h): (B, T, H) -> (B, T, H), (B, T, I)
    in between, and its caches (feed_forward's two, dropout's, LayerNorm's; None with
    keep_cache=False)."""
    w = _weight_and_bias(params, prefix)
    o, c_feed_forward = feed_forward(h, *w("intermediate.dense"), *w("output.dense"),
                                     cfg.hidden_act, keep_cache=keep_cache)           # (B, T, H)
    o, c_output_dropout = dropout_forward(o, cfg.hidden_dropout_prob, rng)
    y, c_output_norm = add_layernorm_forward(o, h, *w("output.LayerNorm"),
                                             cfg.layer_norm_eps)                      # LN(o + h)
    if not keep_cache:
        return y, None
    return y, (*c_feed_forward, c_output_dropout, c_output_norm)


def layer_backward(dy, cache: LayerCache, grads, prefix, cfg):
    """Reverse of layer_forward: the feed-forward sublayer, then the attention sublayer; dx."""
    dh = feed_forward_sublayer_backward(dy, cache, grads, prefix)
    return attention_sublayer_backward(dh, cache, grads, prefix)


def feed_forward_sublayer_backward(dy, c: LayerCache, grads, prefix):
    """Reverse of feed_forward_sublayer_forward, line by line; returns dh."""
    d_sum, dw, db = layernorm_backward(dy, c.output_norm)       # y = LN(o + h)
    add_grads(grads, prefix + "output.LayerNorm", dw, db)
    do = dropout_backward(d_sum, c.output_dropout)              # o = dropout(o)
    dg, dw, db = linear_backward(do, c.output_dense)            # o = g Wo2^T + bo2
    add_grads(grads, prefix + "output.dense", dw, db)
    dh, dw, db = linear_act_backward(dg, c.intermediate)        # g = act(h Wi^T + bi)
    add_grads(grads, prefix + "intermediate.dense", dw, db)
    dh += d_sum                                                 # residual: y = LN(o + h)
    return dh


def attention_sublayer_backward(dh, c: LayerCache, grads, prefix):
    """Reverse of attention_sublayer_forward, line by line; returns dx."""
    d_sum, dw, db = layernorm_backward(dh, c.attention_norm)    # h = LN(a + x)
    add_grads(grads, prefix + "attention.output.LayerNorm", dw, db)
    da = dropout_backward(d_sum, c.attention_dropout)           # a = dropout(a)
    dctx, dw, db = linear_backward(da, c.attention_dense)       # a = ctx Wo^T + bo
    add_grads(grads, prefix + "attention.output.dense", dw, db)
    dx, (dwq, dbq, dwk, dbk, dwv, dbv) = attention_backward(dctx, c.attention)  # ctx = Attention(x)
    add_grads(grads, prefix + "attention.self.query", dwq, dbq)
    add_grads(grads, prefix + "attention.self.key", dwk, dbk)
    add_grads(grads, prefix + "attention.self.value", dwv, dbv)
    dx += d_sum                                                 # residual: h = LN(a + x)
    return dx


class PoolerCache(NamedTuple):
    hidden_shape: tuple         # (B, T, H) of the encoder's output
    dense: tuple                # z = h[:, 0] Wp^T + bp
    tanh: object                # pooled = tanh(z)


def pooler_forward(h, params, prefix):
    """pooled = tanh(h[:, 0] Wp^T + bp): (B, T, H) -> (B, H)."""
    p = prefix + "pooler.dense"
    z, c_dense = linear_forward(h[:, 0], params[p + ".weight"], params[p + ".bias"])  # (B, H)
    pooled, c_tanh = tanh_forward(z)
    return pooled, PoolerCache(h.shape, c_dense, c_tanh)


def pooler_backward(dpooled, cache: PoolerCache, grads, prefix):
    """Returns dh (B, T, H), non-zero only at position 0."""
    dz = tanh_backward(dpooled, cache.tanh)                  # pooled = tanh(z)
    dh0, dw, db = linear_backward(dz, cache.dense)           # z = h[:, 0] Wp^T + bp
    add_grads(grads, prefix + "pooler.dense", dw, db)
    dh = np.zeros(cache.hidden_shape, dtype=dh0.dtype)
    dh[:, 0] = dh0
    return dh


class EncoderCache(NamedTuple):
    embeddings: EmbeddingsCache
    layers: list                # a LayerCache per layer


def encoder_forward(input_ids, token_type_ids, mask_bias, params, prefix, cfg, rng, *,
                    keep_cache=True, hidden_states=None, attentions=None):
    """Embeddings then every layer: returns (last_hidden_state (B, T, H), cache).

    With keep_cache=False (inference) no layer keeps a cache, so memory holds one layer's
    activations instead of all of them, and the attention never writes its (B, A, T, T)
    probabilities; the cache returned is None.
    Lists passed as `hidden_states` and `attentions` receive, as transformers'
    output_hidden_states / output_attentions do, the embeddings' output and then every layer's
    output (L + 1 arrays (B, T, H)), and every layer's attention probabilities (L arrays
    (B, A, T, T)). They are the very arrays the computation uses, so the numbers do not change;
    left as None they cost nothing."""
    x, c_emb = embeddings_forward(input_ids, token_type_ids, params, prefix, cfg, rng)
    if hidden_states is not None:
        hidden_states.append(x)
    c_layers = []
    for i in range(cfg.num_hidden_layers):
        x, c = layer_forward(x, mask_bias, params, f"{prefix}encoder.layer.{i}.", cfg, rng,
                             keep_cache=keep_cache, attentions=attentions)
        c_layers.append(c)
        if hidden_states is not None:
            hidden_states.append(x)
    return x, (EncoderCache(c_emb, c_layers) if keep_cache else None)


def encoder_backward(dh, cache: EncoderCache, grads, prefix, cfg):
    for i in reversed(range(cfg.num_hidden_layers)):
        dh = layer_backward(dh, cache.layers[i], grads, f"{prefix}encoder.layer.{i}.", cfg)
    embeddings_backward(dh, cache.embeddings, grads, prefix, cfg)
