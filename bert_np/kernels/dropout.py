"""Inverted dropout's forward in one pass: y = x * m / (1 - p), m = (u >= p).

u comes from the counter-based SplitMix64 of bert_np/rng.py: element i's number
depends on (key, i) only, so every element is computed independently, in parallel blocks, with
64-bit integer vector arithmetic, and the values are the reference's bit for bit. The NumPy
reference materialises the 64-bit counters, five integer passes, u, the comparison and the float
mask, each a full array; here one loop writes the scaled mask and y. p and 1 / (1 - p) are rounded
to the dtype of x first, as NumPy does with a Python float scalar.
"""
import numpy as np
from numba import njit, prange

from ..rng import GAMMA, MIX_1, MIX_2, SHIFTS, UNIFORM_BITS, draw_key, first_element
from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported

BLOCK = 16384   # elements per task
_TOP = np.uint64(64 - UNIFORM_BITS)
_SIGNATURES = [f"void({t}[::1], uint64, int64, {t}, {t}, {t}[::1], {t}[::1])" for t in FLOAT_TYPES]


@njit(cache=True, inline="always")
def counter_uniform(key, i, grid):
    """Element i's uniform number, the reference's counter_uniform(key, n)[i]; grid = 2^-24 in
    the dtype of the result."""
    z = np.uint64(i + 1) * GAMMA + key
    z = (z ^ (z >> SHIFTS[0])) * MIX_1
    z = (z ^ (z >> SHIFTS[1])) * MIX_2
    z ^= z >> SHIFTS[2]
    return (z >> _TOP) * grid


@njit_per_dtype(_SIGNATURES, cache=True, parallel=True)
def _dropout(x, key, first, p, scale, mask, y):
    """mask[i] = scale if u[i] >= p else 0;  y[i] = x[i] * mask[i];  u[i] from (key, first + i)."""
    n = x.shape[0]
    grid = scale - scale + 2.0 ** -UNIFORM_BITS              # 2^-24 in the dtype of x
    for blk in prange((n + BLOCK - 1) // BLOCK):
        lo, hi = blk * BLOCK, min((blk + 1) * BLOCK, n)
        xb, mb, yb = x[lo:hi], mask[lo:hi], y[lo:hi]          # 0-based loop: see kernels/gelu.py
        for i in range(hi - lo):
            keep = scale if counter_uniform(key, first + lo + i, grid) >= p else scale - scale
            mb[i] = keep
            yb[i] = xb[i] * keep


@register("dropout_forward")
def dropout_forward(x, p, rng):
    """Returns (y, m / (1 - p)) like the reference, or (x, None) when dropout is off."""
    if p == 0.0 or rng is None or not supported(x):
        return NotImplemented
    dtype = x.dtype.type
    x1 = np.ascontiguousarray(x).reshape(-1)
    mask, y = np.empty_like(x1), np.empty_like(x1)
    key, first = draw_key(rng), first_element(rng, x.shape)
    _dropout(x1, key, first, dtype(p), dtype(1.0 / (1.0 - p)), mask, y)
    return y.reshape(x.shape), mask.reshape(x.shape)
