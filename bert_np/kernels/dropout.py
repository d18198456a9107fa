"""Inverted dropout's forward in one pass: y = x * m / (1 - p), m = (u >= p), u uniform in [0, 1).

The NumPy reference makes four passes after drawing u (compare, convert to float, scale, multiply)
and allocates a temporary for each. Here u is drawn by the same Generator call as the reference,
so the random stream, the mask and the output are bit for bit the reference's; then one loop over
the elements writes the scaled mask over u (which is no longer needed) and y, split over the cores.
p and 1 / (1 - p) are rounded to the dtype of x first, as NumPy does with a Python float scalar.
"""
import numpy as np
from numba import njit, prange

from ..layers import dropout as reference
from . import register
from .common import FLOAT_TYPES, supported

BLOCK = 16384   # elements per task
_SIGNATURES = [f"void({t}[::1], {t}[::1], {t}, {t}, {t}[::1])" for t in FLOAT_TYPES]


@njit(_SIGNATURES, cache=True, parallel=True)
def _dropout(x, u_to_mask, p, scale, y):
    """u_to_mask[i] <- scale if u_to_mask[i] >= p else 0;  y[i] = x[i] * u_to_mask[i]."""
    n = x.shape[0]
    for blk in prange((n + BLOCK - 1) // BLOCK):
        lo, hi = blk * BLOCK, min((blk + 1) * BLOCK, n)
        xb, mb, yb = x[lo:hi], u_to_mask[lo:hi], y[lo:hi]     # 0-based loop: see kernels/gelu.py
        for i in range(hi - lo):
            keep = scale if mb[i] >= p else scale - scale
            mb[i] = keep
            yb[i] = xb[i] * keep


@register("dropout_forward")
def dropout_forward(x, p, rng):
    """Returns (y, m / (1 - p)) like the reference, or (x, None) when dropout is off."""
    if p == 0.0 or rng is None or not supported(x):
        return reference.dropout_forward.reference(x, p, rng)
    dtype = x.dtype.type
    u = rng.random(x.shape, dtype=x.dtype)                    # the reference's draw
    y = np.empty_like(u)
    _dropout(np.ascontiguousarray(x).reshape(-1), u.reshape(-1), dtype(p),
             dtype(1.0 / (1.0 - p)), y.reshape(-1))
    return y, u
