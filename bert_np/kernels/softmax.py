"""The attention softmax, forward and backward, one row of the (B, A, T, T) scores at a time.

forward:   P = softmax(scale * S + M)   over the last axis, M (B, 1, 1, T) is 0 or dtype-min
backward:  dS = scale * P * (dP - sum_j dP_j P_j)

Why it is fast: the NumPy reference makes ~7 passes over the (B, A, T, T) array, each writing a
temporary as large as the array (scale, add the mask, max, subtract, exp, sum, divide) and so runs
at memory speed. Here each row of T scores is read from memory once into the output row, which then
stays in L1 while it is scaled and masked (tracking the max), exponentiated with a vectorised exp
(vecmath.py) and normalised; the row is written once. The backward reads dP and P once and writes
dS once. Rows are independent: `prange` hands chunks of rows to the cores, each chunk with its own
scratch row for the exp.

A row whose keys are all padding has every score equal to dtype-min after the mask (the scaled
score is absorbed), so it gets uniform attention 1/T, exactly as the reference and transformers.
"""
import numba
import numpy as np
from numba import njit, prange

from ..layers import attention as reference
from . import register
from .common import FLOAT_TYPES, supported
from .vecmath import exp_constants, exp_constants_type, exp_nonpositive, exponent_layout, maxnum

_FORWARD_SIGNATURES = [
    f"void({t}[:, :, ::1], {t}[:, ::1], {t}, {t}[:, :, ::1], {t}[:, :, ::1], {i}[:, :, ::1], "
    f"{exp_constants_type(t)}, int64, int64)" for t, i in (("float32", "int32"), ("float64", "int64"))]
_BACKWARD_SIGNATURES = [f"void({t}[:, ::1], {t}[:, ::1], {t}, {t}[:, ::1])"
                        for t in FLOAT_TYPES]


@njit(cache=True, fastmath=True, inline="always")
def _scale_mask_max(s, m, scale, z):
    """z = scale * s + m; returns max(z). s, m, z (T,)"""
    z_max = scale * s[0] + m[0]
    for j in range(s.shape[0]):
        z[j] = scale * s[j] + m[j]
        z_max = maxnum(z_max, z[j])                           # max() would not vectorise
    return z_max


@njit(cache=True, fastmath=True, inline="always")
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


@njit(cache=True, fastmath=True)
def softmax_row(s, m, scale, p, z, pow2, pow2_bits, consts, mantissa_bits, exponent_bias):
    """p = softmax(scale * s + m) for one row of T scores; s and p may be the same row.

    z, pow2 (T,) are scratch rows (pow2_bits the integer view of pow2), distinct from s and p.
    A row with a NaN or infinite score becomes NaN throughout, so a diverged model shows NaN (as
    the reference does) instead of whatever the fast-math code below makes of such values.
    Not inlined in Numba's IR: a caller compiled with narrower fastmath flags (the attention
    kernel, whose GEMM tiles must not be reassociated) would impose them on the max and sum here,
    and those reductions only vectorise when reassociation is allowed.
    """
    if not _all_finite(s):
        _fill_nan(p)
        return
    z_max = _scale_mask_max(s, m, scale, z)
    for j in range(z.shape[0]):
        z[j] -= z_max                                         # <= 0: the softmax ignores a shift
    exp_nonpositive(z, p, pow2, pow2_bits, consts, mantissa_bits, exponent_bias)
    _normalise(p)


@njit(_FORWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _softmax_rows(scores, mask, scale, probs, scratch, scratch_bits, consts, mantissa_bits,
                  exponent_bias):
    """probs[b, r] = softmax(scale * scores[b, r] + mask[b]); scores, probs (B, A*T, T), mask (B, T).

    Work is split into scratch.shape[0] chunks of rows; chunk c keeps the shifted scores of its
    current row in scratch[c, 0] and the exp's powers of two in scratch[c, 1] (integer view
    scratch_bits[c, 1]). Three distinct rows let LLVM vectorise without aliasing fallbacks.
    """
    B, R = scores.shape[0], scores.shape[1]
    n_chunks = scratch.shape[0]
    for c in prange(n_chunks):
        z = scratch[c, 0]                                     # (T,)
        for row in range(c * B * R // n_chunks, (c + 1) * B * R // n_chunks):
            b, r = row // R, row % R
            softmax_row(scores[b, r], mask[b], scale, probs[b, r], z, scratch[c, 1],
                        scratch_bits[c, 1], consts, mantissa_bits, exponent_bias)


@njit(_BACKWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
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
        return reference.attention_softmax_forward.reference(scores, mask_bias, scale)
    B, A, T, _ = scores.shape
    dtype = scores.dtype
    scores3 = np.ascontiguousarray(scores).reshape(B, A * T, T)           # (B, A*T, T)
    mask2 = np.ascontiguousarray(mask_bias).reshape(B, T)                 # (B, T)
    probs = np.empty((B, A * T, T), dtype=dtype)
    n_chunks = max(1, min(B * A * T, 8 * numba.get_num_threads()))
    scratch = np.empty((n_chunks, 2, T), dtype=dtype)                     # per-chunk rows
    int_type, mantissa_bits, exponent_bias = exponent_layout(dtype)
    _softmax_rows(scores3, mask2, dtype.type(scale), probs, scratch, scratch.view(int_type),
                  exp_constants(dtype), mantissa_bits, exponent_bias)
    return probs.reshape(B, A, T, T)


@register("attention_softmax_backward")
def attention_softmax_backward(dprobs, probs, scale):
    """dscores (B, A, T, T) = scale * P * (dP - sum_j dP_j P_j), one pass over dP and P."""
    if not supported(dprobs, probs):
        return reference.attention_softmax_backward.reference(dprobs, probs, scale)
    shape, T = probs.shape, probs.shape[-1]
    dscores = np.empty(shape, dtype=probs.dtype)
    _softmax_backward_rows(np.ascontiguousarray(dprobs).reshape(-1, T),
                           np.ascontiguousarray(probs).reshape(-1, T),
                           probs.dtype.type(scale), dscores.reshape(-1, T))
    return dscores
