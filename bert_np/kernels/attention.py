"""The core of self-attention in one pass per head: scores, softmax, dropout, context.

    S = Q K^T,  P = softmax(scale * S + M),  P' = dropout(P),  C = P' V      for each (b, a)

The NumPy reference (layers/attention.py) runs these as four operations over the whole
(B, A, T, T) stack: S is written to memory, read back by the softmax, P written, read by dropout,
P' written and read by the second product, and the context is then copied once more to merge the
heads. At T = 128 one head's S is 64 KB, which fits in L2. So here each task takes one (b, a):
  1. S = Q K^T into a (T, T) block, with the GEMM's 8 x 16 micro-kernel (`_head_product`),
  2. each row of that block becomes its softmax in place (softmax.softmax_row),
  3. under dropout, each row is multiplied by its mask, drawn from the same counter-based
     generator as the reference (bert_np.rng.counter_uniform), at the same element index,
  4. C = P' V is written straight into columns a*D .. (a+1)*D of the (B, T, H) context.
K and V are packed by two loops of their own rather than gemm.pack_panels: that routine takes any
strides, so on a head's view Numba cannot see the unit stride and the copy stays scalar; indexing
the (B, T, H) arrays directly it vectorises (packing measured ~23 -> ~5 us per head at T = 128).
The block never leaves the cache in inference, where nothing needs P afterwards (keep_probs off).
For training the block is P itself, in the (B, A, T, T) array the backward reads, and P' and the
mask are written beside it, as the reference returns them.

An int8 model's sublayer in inference (`attention_forward`, `_attention_int8`): one job per
sequence quantizes its T rows, runs the stacked Q, K, V product (kernels/int8.py's AMX or VNNI
blocks), dequantizes into a (T, 3H) buffer and runs the heads on it while it is in L2; the
two-pass form writes the (B, T, 3H) projection (9 MB for MiniLM at B=32, T=64) and reads it back.
"""
import math

import numba
import numpy as np
from numba import njit, prange

from ..rng import UNIFORM_BITS, draw_key, first_element
from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported
from .dropout import counter_uniform
from .gemm import MR, NR, micro_tile, micro_tile_wide, pack_panels, store_tile
from .int8 import (FF_ROWS, MAX_K, PANEL, QMAX, TILE_CONFIG, active_path, dequantize_block,
                   int8_linear_forward, is_int8_weight, packed_weight, padded_columns,
                   quantize_block, row_block_sums, stacked_weight)
from .softmax import softmax_row
from .vecmath import exp_constants, exp_constants_type

_SIGNATURES = [
    f"void({t}[:, :, ::1], {t}[:, :, ::1], {t}[:, :, ::1], int64, int64, int64, {t}[::1], int64, "
    f"{t}[:, ::1], {t}, "
    f"boolean, uint64, int64, {t}, {t}, {t}[:, :, ::1], {t}[:, :, :, ::1], {t}[:, :, :, ::1], "
    f"{t}[:, :, :, ::1], {t}[:, ::1], {exp_constants_type(t)})" for t in FLOAT_TYPES]


@njit(cache=True, inline="always")
def _pack_columns(x, b, c0, width, out):
    """out[p, r, j] = x[b, r, c0 + NR*p + j]: columns c0 .. c0 + width of x[b] (T, H) as NR-column
    panels (zero past width); for V, whose rows are already runs of a head's columns."""
    for p in range(out.shape[0]):
        n = min(NR, width - p * NR)
        for r in range(x.shape[1]):
            src, dst = x[b, r, c0 + p * NR:c0 + p * NR + n], out[p, r]   # 0-based: no wraparound
            for j in range(n):
                dst[j] = src[j]
            for j in range(n, NR):
                dst[j] = 0.0


@njit(cache=True, inline="always")
def _pack_rows(x, b, c0, width, out):
    """out[p, d, j] = x[b, NR*p + j, c0 + d]: rows of x[b, :, c0:c0+width] (T, width) as NR-column
    panels of its transpose (zero past T); for K, whose transpose the scores need."""
    T = x.shape[1]
    for p in range(out.shape[0]):
        n = min(NR, T - p * NR)
        dst = out[p]                                          # (width, NR)
        for j in range(n):
            src = x[b, p * NR + j, c0:c0 + width]             # one key's D values
            for d in range(width):
                dst[d, j] = src[d]
        for j in range(n, NR):
            for d in range(width):
                dst[d, j] = 0.0


@njit(cache=True, fastmath={"contract"}, inline="always")
def _head_product(a, b_panels, n, c, tiles_in_place):
    """c (M, n) = a (M, K) @ B for one head, B given as NR-column panels b_panels (ceil(n/NR), K, NR).

    Unlike the Linear layer's GEMM, K (D or T) fits one panel depth, and A is not packed: the
    micro-kernel reads its 8 values per k straight from 8 rows of `a` (scalar loads, any strides);
    only rows past the last multiple of 8 are copied into a zero-padded panel.
    Pairs of full panels go through the 8 x 32 tile (`micro_tile_wide`), which reads those 8
    values once for two panels (BERT-tiny's attention core, B = 32, one thread: 1.10-1.22x the
    8 x 16 tile alone, alternating in one process); a last odd or partial panel, and the edge
    rows, through the 8 x 16 one.
    With tiles_in_place the micro-kernel writes each whole tile straight into c instead of
    into a buffer that is then copied: for the (T, T) score block (QK^T of a BERT-tiny head
    20 -> 16 us). Into the context's strided columns that measured slower (PV 16 -> 22 us).
    """
    M, K = a.shape
    tile = np.empty((MR, 2 * NR), dtype=c.dtype)
    edge = np.empty((1, K, MR), dtype=c.dtype)
    no_bias = np.empty(0, dtype=c.dtype)
    full = M - M % MR                                         # rows in whole 8-row panels
    pairs = n // (2 * NR)                                     # pairs of full panels
    for jp in range(pairs):
        j0 = 2 * NR * jp
        for i0 in range(0, full, MR):
            if tiles_in_place:
                micro_tile_wide(a[i0:i0 + MR].T, b_panels[2 * jp], b_panels[2 * jp + 1], K,
                                 c[i0:i0 + MR, j0:j0 + 2 * NR])
            else:
                micro_tile_wide(a[i0:i0 + MR].T, b_panels[2 * jp], b_panels[2 * jp + 1], K, tile)
                store_tile(c, tile, i0, j0, MR, 2 * NR, True, no_bias)
    for jr in range(b_panels.shape[0]):
        nr = min(NR, n - jr * NR)
        for i0 in range(0, full if jr >= 2 * pairs else 0, MR):
            if tiles_in_place and nr == NR:
                micro_tile(a[i0:i0 + MR].T, b_panels[jr], K, c[i0:i0 + MR, jr * NR:jr * NR + NR])
            else:
                micro_tile(a[i0:i0 + MR].T, b_panels[jr], K, tile)   # a panel (K, 8), in place
                store_tile(c, tile, i0, jr * NR, MR, nr, True, no_bias)
        if full < M:
            pack_panels(a, full, M - full, 0, K, edge)
            micro_tile(edge[0], b_panels[jr], K, tile)
            store_tile(c, tile, full, jr * NR, M - full, nr, True, no_bias)


@njit(cache=True, fastmath={"contract"}, inline="always")
def _head_probabilities(q, k, q0, k0, b, a, D, mask_row, scale, block, scratch_row, consts):
    """block (T, T) = softmax(scale Q K^T + mask_row) for head a of batch row b: Q = q[b, :,
    q0+a*D:q0+(a+1)*D], K likewise (k0). K^T is packed, S = Q K^T written into block, each row
    of which becomes its softmax in place."""
    T = block.shape[0]
    panels_of_kt = np.empty(((T + NR - 1) // NR, D, NR), dtype=q.dtype)       # K^T, packed
    _pack_rows(k, b, k0 + a * D, D, panels_of_kt)
    _head_product(q[b, :, q0 + a * D:q0 + (a + 1) * D], panels_of_kt, T, block,
                  True)                                       # S = Q K^T
    for i in range(T):
        softmax_row(block[i], mask_row, scale, block[i], scratch_row, consts)


@njit(cache=True, fastmath={"contract"}, inline="always")
def _head_context(block, v, vb, v0, a, D, context, cb):
    """context[cb, :, a*D:(a+1)*D] = block (T, T) V, V = v[vb, :, v0+a*D:v0+(a+1)*D] packed."""
    T = block.shape[0]
    panels_of_v = np.empty(((D + NR - 1) // NR, T, NR), dtype=v.dtype)        # V, packed
    _pack_columns(v, vb, v0 + a * D, D, panels_of_v)
    _head_product(block, panels_of_v, D, context[cb, :, a * D:(a + 1) * D], False)  # C = P'V


@njit(cache=True, inline="always")
def _add_head_bias(q, k, v, q0, k0, v0, bias, b, c0, D, H):
    """Q, K, V of sequence b += their bias in columns c0 .. c0 + D of the head (bias (3H,) holds
    [bq; bk; bv]); every row a 0-based slice, so the loop vectorises."""
    bq, bk, bv = bias[c0:c0 + D], bias[H + c0:H + c0 + D], bias[2 * H + c0:2 * H + c0 + D]
    for t in range(q.shape[1]):
        qr, kr, vr = (q[b, t, q0 + c0:q0 + c0 + D], k[b, t, k0 + c0:k0 + c0 + D],
                      v[b, t, v0 + c0:v0 + c0 + D])
        for d in range(D):
            qr[d] += bq[d]
            kr[d] += bk[d]
            vr[d] += bv[d]


@njit_per_dtype(_SIGNATURES, cache=True, fastmath={"contract"}, parallel=True)
def _attention_heads(q, k, v, q0, k0, v0, bias, num_heads, mask, scale, dropout, key, first, p,
                     keep_scale, context, probs, probs_dropped, keep_scaled, scratch, consts):
    """context[b, :, a*D:(a+1)*D] = dropout(softmax(scale Q K^T + mask[b])) V for each batch row b
    and head a, where Q = q[b, :, q0+a*D:q0+(a+1)*D] and likewise K (k0) and V (v0); q, k, v
    (B, T, >= H), context (B, T, H): the three may be one (B, T, 3H) array of the fused projection.

    bias (3H,) or empty: [bq; bk; bv], added in place to the head's columns of Q, K and V by the
    task that then reads them (`_add_head_bias`): no task touches another's columns, and the
    projection x [Wq; Wk; Wv]^T needs no bias pass of its own over the (B, T, 3H) array.

    probs, probs_dropped, keep_scaled (B, A, T, T) receive P, P' and the mask m / (1 - p) when
    their first axis is B; with a first axis of 0 each task works in a block of its own.
    scratch (B*A, T) gives each task the softmax's scratch row. P[b, a, i, j]'s dropout uniform is
    element first + ((b A + a) T + i) T + j of the counter-based generator, as in the reference.
    """
    B, T, H = context.shape
    A, D = num_heads, H // num_heads
    keep_probs = probs.shape[0] > 0
    grid = scale - scale + 2.0 ** -UNIFORM_BITS               # 2^-24 in the dtype of q
    for task in prange(B * A):
        b, a = task // A, task % A
        if bias.shape[0] > 0:
            _add_head_bias(q, k, v, q0, k0, v0, bias, b, a * D, D, H)
        block = probs[b, a] if keep_probs else np.empty((T, T), dtype=q.dtype)   # (T, T)
        _head_probabilities(q, k, q0, k0, b, a, D, mask[b], scale, block, scratch[task], consts)
        if dropout:
            for i in range(T):
                row0 = first + (task * T + i) * T              # index of P[b, a, i, 0] in the stack
                m, pd, pr = keep_scaled[b, a, i], probs_dropped[b, a, i], block[i]
                for j in range(T):
                    keep = keep_scale if counter_uniform(key, row0 + j, grid) >= p \
                        else keep_scale - keep_scale
                    m[j] = keep
                    pd[j] = pr[j] * keep
            block = probs_dropped[b, a]
        _head_context(block, v, b, v0, a, D, context, b)


def _attention_int8_loops(x, wp, start, s_w, bias, num_heads, mask, scale, context, scratch,
                          consts, qmax, amx, config, x_columns):
    """context[b] for every sequence b as `_attention_heads` computes it (inference), with Q, K, V
    the int8 projection of x[b] (T, K) by the stacked [Wq; Wk; Wv] (packed wp, start) and its
    scales s_w and bias (3H,): one job per sequence quantizes its rows (`quantize_block`), sums
    them 32 rows at a time with every panel (`row_block_sums`, AMX or VNNI), dequantizes into
    qkv (1, T, 3H) (`dequantize_block`), the same operations as int8_linear_forward, then runs
    every head on it. qkv stays in L2 (300 KB at T = 64, H = 384) from the product to the heads,
    where the unfused path writes the (B, T, 3H) projection to memory and reads it back."""
    B, T, H = context.shape
    A, D = num_heads, H // num_heads
    rows = (T + FF_ROWS - 1) // FF_ROWS * FF_ROWS
    for b in prange(B):
        x32 = np.empty((rows, x_columns // 4), dtype=np.int32)
        x8 = x32.view(np.uint8)                               # x_q + 128, rows and k padded
        s_x = np.empty(rows, dtype=x.dtype)
        quantize_block(x[b], x8, s_x, qmax)
        acc = np.empty((rows, wp.shape[0] * PANEL), dtype=np.int32)
        for r0 in range(0, rows, FF_ROWS):
            row_block_sums(x8, x32, wp, start, r0, acc[r0:r0 + FF_ROWS], amx, config)
        qkv = np.empty((1, T, s_w.shape[0]), dtype=x.dtype)
        dequantize_block(acc, T, s_x, s_w, bias, qkv[0])     # Q, K, V at columns 0, H, 2H
        block = np.empty((T, T), dtype=x.dtype)
        for a in range(A):
            _head_probabilities(qkv, qkv, 0, H, 0, a, D, mask[b], scale, block, scratch[b], consts)
            _head_context(block, qkv, 0, 2 * H, a, D, context, b)


_attention_int8 = njit_per_dtype(
    [f"void({t}[:, :, ::1], int32[:, :, ::1], int32[:, ::1], {t}[::1], {t}[::1], int64, "
     f"{t}[:, ::1], {t}, {t}[:, :, ::1], {t}[:, ::1], {exp_constants_type(t)}, {t}, boolean, "
     f"uint8[::1], int64)" for t in FLOAT_TYPES],
    cache=True, fastmath={"contract"}, parallel=True)(_attention_int8_loops)


def _fuses_int8_projection(B, T):
    """True where one job per sequence (`_attention_int8`) suits the shape: the product and
    heads keep every thread busy (one thread, or 2 sequences per thread), and padding T to
    32-row blocks wastes at most a quarter of the product."""
    rows = (T + FF_ROWS - 1) // FF_ROWS * FF_ROWS
    threads = numba.get_num_threads()
    return (threads == 1 or B >= 2 * threads) and 4 * (rows - T) <= rows


@register("attention_context_forward")
def attention_context_forward(q, k, v, mask_bias, scale, dropout_p=0.0, rng=None, *,
                              keep_probs=True):
    """(context, P, P', dropout cache) like the reference, computed one head at a time."""
    if not supported(q, k, v, mask_bias) or q.ndim != 4:
        return NotImplemented
    B, A, T, D = q.shape
    dtype = q.dtype
    dropout = dropout_p != 0.0 and rng is not None
    stack = (B, A, T, T) if keep_probs or dropout else (0, 0, 0, 0)
    probs = np.empty(stack, dtype)
    probs_dropped, keep_scaled = (np.empty(stack, dtype), np.empty(stack, dtype)) if dropout \
        else (probs, None)
    key = draw_key(rng) if dropout else np.uint64(0)
    first = first_element(rng, (B, A, T, T)) if dropout else 0
    context = np.empty((B, T, A * D), dtype)
    scratch = np.empty((B * A, T), dtype)
    q, k, v = (np.ascontiguousarray(t.transpose(0, 2, 1, 3)).reshape(B, T, A * D)
               for t in (q, k, v))                            # (B, T, H), heads merged
    _attention_heads(q, k, v, 0, 0, 0, np.empty(0, dtype), A,
                     np.ascontiguousarray(mask_bias).reshape(B, T),
                     dtype.type(scale),
                     dropout, key, first, dtype.type(dropout_p),
                     dtype.type(1.0 / (1.0 - dropout_p)),
                     context, probs, probs_dropped, probs if keep_scaled is None else keep_scaled,
                     scratch, exp_constants(dtype))
    if not keep_probs:
        return context, None, None, None
    return context, probs, probs_dropped, keep_scaled


@register("attention_forward")
def attention_forward(x, wq, bq, wk, bk, wv, bv, mask_bias, num_heads, dropout_p=0.0, rng=None, *,
                      keep_cache=True):
    """(context, None) like the reference, in inference (keep_cache False, no dropout): the three
    projections are one product x [Wq; Wk; Wv]^T + [bq; bk; bv] into a (B, T, 3H) array that
    the heads read in place at column offsets 0, H, 2H.

    One product of N = 3H instead of three of N = H; for float weights the bias [bq; bk; bv] is
    added by each head's task to the columns it is about to read (`_add_head_bias`), so no pass
    over the (B, T, 3H) array runs on one core between the product and the heads; for an
    int8 model one quantization of x instead of three (the stacked int8 weight is built once per
    triple of weights, kernels/int8.py). Float weights are stacked at every call (3 H^2 values,
    ~1% of the product at H = 128), so weights updated in place between calls are always seen.
    An int8 model on the AMX or VNNI path runs the projection and the heads of each sequence in
    one job where the shape suits it (`_attention_int8`, `_fuses_int8_projection`).
    """
    if (keep_cache or (dropout_p != 0.0 and rng is not None) or x.ndim != 3
            or any(b is None for b in (bq, bk, bv))):
        return NotImplemented
    B, T, H = x.shape
    if any(w.shape != (H, H) for w in (wq, wk, wv)) or H % num_heads:
        return NotImplemented
    x2 = x.reshape(-1, H)                                     # (N, H)
    b = np.concatenate((bq, bk, bv))                          # (3H,)
    if all(is_int8_weight(w) for w in (wq, wk, wv)):
        w = stacked_weight((wq, wk, wv))
        if (active_path() != "portable" and _fuses_int8_projection(B, T) and H <= MAX_K
                and supported(x, w.scale, b, mask_bias) and mask_bias.size == B * T):
            context = np.empty((B, T, H), x.dtype)
            wp, _, start = packed_weight(w)
            dtype = x.dtype
            _attention_int8(np.ascontiguousarray(x), wp, start, w.scale, b, num_heads,
                            np.ascontiguousarray(mask_bias).reshape(B, T),
                            dtype.type(1.0 / math.sqrt(H // num_heads)), context,
                            np.empty((B, T), dtype), exp_constants(dtype), dtype.type(QMAX),
                            active_path() == "amx", TILE_CONFIG, padded_columns(H))
            return context, None
        out = int8_linear_forward(x2, w, b)
        if out is NotImplemented:
            return NotImplemented
        qkv = out[0]
        bias = np.empty(0, x.dtype)                           # added by int8_linear_forward
    elif supported(x, wq, bq, wk, bk, wv, bv, mask_bias):
        qkv = np.matmul(x2, np.concatenate((wq, wk, wv)).T)  # (N, 3H); + b in the heads' tasks
        bias = b
    else:
        return NotImplemented
    if not (supported(qkv, mask_bias) and mask_bias.size == B * T):
        return NotImplemented
    dtype = qkv.dtype
    qkv = qkv.reshape(B, T, 3 * H)
    context = np.empty((B, T, H), dtype)
    none = np.empty((0, 0, 0, 0), dtype)
    _attention_heads(qkv, qkv, qkv, 0, H, 2 * H, bias, num_heads,
                     np.ascontiguousarray(mask_bias).reshape(B, T),
                     dtype.type(1.0 / math.sqrt(H // num_heads)), False, np.uint64(0), 0,
                     dtype.type(0.0), dtype.type(1.0), context, none, none, none,
                     np.empty((B * num_heads, T), dtype), exp_constants(dtype))
    return context, None
