"""The attention softmax, forward and backward, one row of the (B, A, T, T) scores at a time.

forward:   P = softmax(scale * S + M)   over the last axis, M (B, 1, 1, T) is 0 or dtype-min
backward:  dS = scale * P * (dP - sum_j dP_j P_j)

Why it is fast: the NumPy reference makes ~7 passes over the (B, A, T, T) array, each writing a
temporary as large as the array (scale, add the mask, max, subtract, exp, sum, divide) and so runs
at memory speed. Here each row of T scores is read from memory once, scaled and masked into a
scratch row (tracking the max), exponentiated into the output row with a vectorised exp
(vecmath.py) and normalised there, all in L1; the row is written once. The backward reads dP and
P once and writes dS once. Rows are independent: `prange` hands chunks of rows to the cores, each
chunk with its own scratch row.

A row whose keys are all padding has every score equal to dtype-min after the mask (the scaled
score is absorbed), so it gets uniform attention 1/T, exactly as the reference and transformers.
"""
import numba
import numpy as np
from numba import njit, prange

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported
from .vecmath import exp_constants, exp_constants_type, exp_nonpositive, maxnum

_FORWARD_SIGNATURES = [
    f"void({t}[:, :, ::1], {t}[:, ::1], {t}, {t}[:, :, ::1], {t}[:, ::1], {exp_constants_type(t)})"
    for t in FLOAT_TYPES]
_BACKWARD_SIGNATURES = [f"void({t}[:, ::1], {t}[:, ::1], {t}, {t}[:, ::1])"
                        for t in FLOAT_TYPES]


@njit(cache=True, fastmath=True)
def _scale_mask_max(s, m, scale, z):
    """z = scale * s + m; returns max(z). s, m, z (T,)"""
    z_max = scale * s[0] + m[0]
    for j in range(s.shape[0]):
        z[j] = scale * s[j] + m[j]
        z_max = maxnum(z_max, z[j])                           # max() would not vectorise
    return z_max


@njit(cache=True, fastmath=True)
def _normalise(p):
    """p /= sum(p), as one reciprocal and T multiplications."""
    total = p[0] - p[0]
    for j in range(p.shape[0]):
        total += p[j]
    inv = 1 / total
    for j in range(p.shape[0]):
        p[j] *= inv


@njit(cache=True, fastmath={"reassoc"})
def _all_finite(s):
    """True if no value of s is NaN or infinite: sum(s * 0) is 0 then and NaN otherwise. Compiled
    without the no-NaN assumption of the other functions here, which would let LLVM drop the test;
    reassociation lets the sum vectorise."""
    total = s[0] - s[0]
    for j in range(s.shape[0]):
        total += s[j] * 0
    return total == 0


@njit(cache=True)
def _fill_nan(p):
    """p[:] = NaN, compiled without fast-math flags (under them a NaN constant is undefined)."""
    for j in range(p.shape[0]):
        p[j] = np.nan


@njit(cache=True, inline="always")
def softmax_row(s, m, scale, p, z, consts):
    """p = softmax(scale * s + m) for one row of T scores; s and p may be the same row.

    z (T,) is a scratch row, distinct from s and p.
    A row with a NaN or infinite score becomes NaN throughout, so a diverged model shows NaN (as
    the reference does) instead of whatever the fast-math code below makes of such values.
    Each pass is a function of its own, compiled with the fastmath flags its loop needs (the max
    and the sum vectorise only with reassociation; the exp must not be reassociated), and this
    function, which has no arithmetic of its own, is inlined into its caller in Numba's IR: as a
    compiled function of its own, its call cost ~60 ns per row (the 128 rows of a BERT-tiny head
    took 20 us that way, 14 us inlined).
    """
    if not _all_finite(s):
        _fill_nan(p)
        return
    z_max = _scale_mask_max(s, m, scale, z)
    exp_nonpositive(z, z_max, p, consts)                      # the softmax ignores a shift
    _normalise(p)


@njit_per_dtype(_FORWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _softmax_rows(scores, mask, scale, probs, scratch, consts):
    """probs[b, r] = softmax(scale * scores[b, r] + mask[b]); scores, probs (B, A*T, T), mask (B, T).

    Work is split into scratch.shape[0] chunks of rows; chunk c keeps the shifted scores of its
    current row in scratch[c], a row distinct from the input and output rows, so that LLVM
    vectorises without aliasing fallbacks.
    """
    B, R = scores.shape[0], scores.shape[1]
    n_chunks = scratch.shape[0]
    for c in prange(n_chunks):
        z = scratch[c]                                        # (T,)
        for row in range(c * B * R // n_chunks, (c + 1) * B * R // n_chunks):
            b, r = row // R, row % R
            softmax_row(scores[b, r], mask[b], scale, probs[b, r], z, consts)


@njit_per_dtype(_BACKWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _softmax_backward_rows(dprobs, probs, scale, dscores):
    """dscores = scale * P * (dP - sum_j dP_j P_j), row by row; all (rows, T)."""
    for row in prange(probs.shape[0]):
        dp, p = dprobs[row], probs[row]
        dot = dp[0] - dp[0]
        for j in range(p.shape[0]):
            dot += dp[j] * p[j]                               # sum_j dP_j P_j
        for j in range(p.shape[0]):
            dscores[row, j] = scale * p[j] * (dp[j] - dot)


@register("attention_softmax_forward")
def attention_softmax_forward(scores, mask_bias, scale):
    """probs (B, A, T, T) = softmax(scale * scores + mask_bias) in one pass per row."""
    if not supported(scores, mask_bias):
        return NotImplemented
    B, A, T, _ = scores.shape
    dtype = scores.dtype
    scores3 = np.ascontiguousarray(scores).reshape(B, A * T, T)           # (B, A*T, T)
    mask2 = np.ascontiguousarray(mask_bias).reshape(B, T)                 # (B, T)
    probs = np.empty((B, A * T, T), dtype=dtype)
    n_chunks = max(1, min(B * A * T, 8 * numba.get_num_threads()))
    scratch = np.empty((n_chunks, T), dtype=dtype)                        # a row per chunk
    _softmax_rows(scores3, mask2, dtype.type(scale), probs, scratch, exp_constants(dtype))
    return probs.reshape(B, A, T, T)


@register("attention_softmax_backward")
def attention_softmax_backward(dprobs, probs, scale):
    """dscores (B, A, T, T) = scale * P * (dP - sum_j dP_j P_j), one pass over dP and P."""
    if not supported(dprobs, probs):
        return NotImplemented
    shape, T = probs.shape, probs.shape[-1]
    dscores = np.empty(shape, dtype=probs.dtype)
    _softmax_backward_rows(np.ascontiguousarray(dprobs).reshape(-1, T),
                           np.ascontiguousarray(probs).reshape(-1, T),
                           probs.dtype.type(scale), dscores.reshape(-1, T))
    return dscores
