"""Multi-head self-attention with a padding mask (BertSelfAttention in Hugging Face).

forward, with A heads of size D = H / A:
    Q = x Wq^T + bq,  K = x Wk^T + bk,  V = x Wv^T + bv       (B, T, H) each, split to (B, A, T, D)
    S = Q K^T                                                 (B, A, T, T) raw scores
    P = softmax(S / sqrt(D) + M)                              M = 0 for a real key, dtype-min for padding
    P' = dropout(P)
    C = P' V                                                  (B, A, T, D), merged back to (B, T, H)
(these four lines are one accelerated operation, attention_context_forward, whose kernel runs them
one head at a time with S in cache)
backward, line by line in reverse:
    dP' = dC V^T         dV = P'^T dC
    dP  = dropout_backward(dP')
    dS  = P * (dP - sum_j dP * P) / sqrt(D)                  (softmax backward, row by row)
    dQ  = dS K           dK = dS^T Q
    dx  = dQ Wq + dK Wk + dV Wv, and the weight gradients of the three projections
The derivation of the softmax backward is in notebooks/04_attention_backward.ipynb.
"""
import math
from typing import NamedTuple

import numpy as np

from ..kernels import accelerated
from .dropout import dropout_backward, dropout_forward
from .linear import linear_backward, linear_forward


def padding_mask_bias(attention_mask, dtype):
    """attention_mask (B, T) of 1 (attend) / 0 (padding) -> additive bias (B, 1, 1, T).

    Padding gets the most negative finite number of the dtype, as transformers does; a row whose
    keys are all padding then gets uniform attention (every score equals that number) and no NaN.
    """
    bias = np.where(attention_mask[:, None, None, :] > 0, 0.0, np.finfo(dtype).min)
    return bias.astype(dtype)


@accelerated("attention_softmax_forward")
def attention_softmax_forward(scores, mask_bias, scale):
    """P = softmax(scale * S + M) over the last axis; scores (B, A, T, T), mask_bias (B, 1, 1, T)."""
    z = scores * scale + mask_bias                            # (B, A, T, T)
    z -= z.max(axis=-1, keepdims=True)                        # the softmax ignores a shift
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


@accelerated("attention_softmax_backward")
def attention_softmax_backward(dprobs, probs, scale):
    """dS = scale * P * (dP - sum_j dP_j P_j)."""
    row_dot = (dprobs * probs).sum(axis=-1, keepdims=True)    # (B, A, T, 1)
    return (scale * probs) * (dprobs - row_dot)


@accelerated("batched_matmul")
def batched_matmul(a, b):
    """a @ b for every (batch, head): (B, A, M, K) x (B, A, K, N) -> (B, A, M, N)."""
    return np.matmul(a, b)


@accelerated("batched_matmul_nt")
def batched_matmul_nt(a, b):
    """a @ b^T for every (batch, head): (B, A, M, K) x (B, A, N, K) -> (B, A, M, N)."""
    return np.matmul(a, b.transpose(0, 1, 3, 2))


@accelerated("batched_matmul_tn")
def batched_matmul_tn(a, b):
    """a^T @ b for every (batch, head): (B, A, K, M) x (B, A, K, N) -> (B, A, M, N)."""
    return np.matmul(a.transpose(0, 1, 3, 2), b)


def split_heads(x, num_heads):
    """(B, T, H) -> (B, A, T, D)"""
    B, T, H = x.shape
    return x.reshape(B, T, num_heads, H // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, A, T, D) -> (B, T, H)"""
    B, A, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, A * D)


@accelerated("attention_context_forward")
def attention_context_forward(q, k, v, mask_bias, scale, dropout_p=0.0, rng=None, *,
                              keep_probs=True):
    """C = dropout(softmax(scale Q K^T + M)) V for every (batch, head); q, k, v (B, A, T, D).

    Returns (context (B, T, H) with the heads merged, probs P, probs_dropped P', dropout cache).
    P and P' are what the backward needs; with keep_probs=False (inference) they are None, which
    lets the kernel keep each head's (T, T) block in cache instead of writing it to memory.
    """
    scores = batched_matmul_nt(q, k)                          # S = Q K^T     (B, A, T, T)
    probs = attention_softmax_forward(scores, mask_bias, scale)
    probs_dropped, cache_drop = dropout_forward(probs, dropout_p, rng)
    context = merge_heads(batched_matmul(probs_dropped, v))   # C = P' V     (B, T, H)
    if not keep_probs:
        return context, None, None, None
    return context, probs, probs_dropped, cache_drop


class AttentionCache(NamedTuple):
    """What attention_backward needs from attention_forward."""
    query: tuple             # the three projections' Linear caches
    key: tuple
    value: tuple
    q: np.ndarray            # (B, A, T, D) each, split into heads
    k: np.ndarray
    v: np.ndarray
    probs: np.ndarray        # P   (B, A, T, T)
    probs_dropped: np.ndarray  # P'  (B, A, T, T), P itself without dropout
    dropout: object          # dropout's cache of P' = dropout(P)
    scale: float             # 1 / sqrt(D)


@accelerated("attention_forward")
def attention_forward(x, wq, bq, wk, bk, wv, bv, mask_bias, num_heads, dropout_p=0.0, rng=None,
                      *, keep_cache=True):
    """Returns (context (B, T, H), AttentionCache); the cache is None when keep_cache is False.
    (In inference the kernel computes the three projections as one product.)"""
    q, cache_q = linear_forward(x, wq, bq)                    # Q = x Wq^T + bq   (B, T, H)
    k, cache_k = linear_forward(x, wk, bk)                    # K = x Wk^T + bk
    v, cache_v = linear_forward(x, wv, bv)                    # V = x Wv^T + bv
    q, k, v = (split_heads(t, num_heads) for t in (q, k, v))  # (B, A, T, D)
    scale = 1.0 / math.sqrt(q.shape[-1])
    context, probs, probs_dropped, cache_drop = attention_context_forward(
        q, k, v, mask_bias, scale, dropout_p, rng, keep_probs=keep_cache)  # (B, T, H)
    if not keep_cache:
        return context, None
    return context, AttentionCache(cache_q, cache_k, cache_v, q, k, v, probs, probs_dropped,
                                   cache_drop, scale)


def attention_backward(dcontext, cache: AttentionCache):
    """Returns (dx, (dwq, dbq, dwk, dbk, dwv, dbv))."""
    c = cache
    dctx = split_heads(dcontext, c.q.shape[1])                # (B, A, T, D)
    dprobs_dropped = batched_matmul_nt(dctx, c.v)             # C = P' V  ->  dP' = dC V^T
    dv = batched_matmul_tn(c.probs_dropped, dctx)             # C = P' V  ->  dV = P'^T dC
    dprobs = dropout_backward(dprobs_dropped, c.dropout)      # P' = dropout(P)
    dscores = attention_softmax_backward(dprobs, c.probs, c.scale)  # P = softmax(S / sqrt(D) + M)
    dq = batched_matmul(dscores, c.k)                         # S = Q K^T  ->  dQ = dS K
    dk = batched_matmul_tn(dscores, c.q)                      # S = Q K^T  ->  dK = dS^T Q
    dx, dwq, dbq = linear_backward(merge_heads(dq), c.query)  # Q = x Wq^T + bq
    dx_k, dwk, dbk = linear_backward(merge_heads(dk), c.key)  # K = x Wk^T + bk
    dx_v, dwv, dbv = linear_backward(merge_heads(dv), c.value)  # V = x Wv^T + bv
    dx += dx_k
    dx += dx_v
    return dx, (dwq, dbq, dwk, dbk, dwv, dbv)
