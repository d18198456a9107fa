"""LayerNorm forward and backward, one row of H values at a time.

forward:   mu = mean(x)   var = mean((x - mu)^2)   rstd = 1 / sqrt(var + eps)
           xhat = (x - mu) * rstd                   y = w * xhat + b
backward:  dxhat = dy * w
           dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
           dw = sum over rows of dy * xhat          db = sum over rows of dy

"Add & Norm", LayerNorm(x + residual), is the same loop with the sum formed row by row in L1.

Why it is fast: the NumPy reference makes about ten passes over the (N, H) activations, each
writing a temporary of that size. Here a row (H <= a few thousand values) is read from memory once
and stays in L1 while its mean, variance and outputs are computed; xhat and y are written once.
The backward reads dy and xhat once per row. Rows are independent and split over the cores with
`prange`; the parameter gradients dw, db, which sum over rows, are accumulated per chunk of rows
(in float64, so a float32 sum over 4096 rows loses nothing) and the few chunk sums added at the end.
"""
import numba
import numpy as np
from numba import njit, prange

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported

_FORWARD_SIGNATURES = [f"void({t}[:, ::1], {t}[:, ::1], {t}[::1], {t}[::1], float64, {t}[:, ::1], "
                       f"{t}[:, ::1], {t}[:, ::1])" for t in FLOAT_TYPES]
_BACKWARD_SIGNATURES = [f"void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[::1], {t}[:, ::1], float64[:, ::1], float64[:, ::1])"
                        for t in FLOAT_TYPES]


@njit(cache=True, inline="always")
def normalise_row(s, w, b, eps, y, xhat):
    """xhat = (s - mean(s)) * rstd and y = w * xhat + b for one row s (H,), which may be y itself
    (the caller forms the row in y, where it stays in L1); returns rstd = 1 / sqrt(var(s) + eps).
    Inlined, so it runs with the fast-math flags of the kernel that calls it."""
    H = s.shape[0]
    mu = 0.0
    for h in range(H):
        mu += s[h]
    mu /= H
    var = 0.0
    for h in range(H):
        var += (s[h] - mu) ** 2                               # two passes: no cancellation
    r = 1.0 / np.sqrt(var / H + eps)
    for h in range(H):
        xh = (s[h] - mu) * r
        xhat[h] = xh
        y[h] = w[h] * xh + b[h]
    return r


@njit_per_dtype(_FORWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _layernorm_rows(x, residual, w, b, eps, y, xhat, rstd):
    """Per row n of s = x + residual (N, H), or of s = x when residual has no rows:
    rstd[n, 0], xhat[n] and y[n] = w * xhat[n] + b. s[n] is formed in y[n], where it stays in L1."""
    N, H = x.shape
    add_residual = residual.shape[0] > 0
    for n in prange(N):
        s = y[n]                                              # the row of the sum, overwritten below
        if add_residual:
            for h in range(H):
                s[h] = x[n, h] + residual[n, h]
        else:
            for h in range(H):
                s[h] = x[n, h]
        rstd[n, 0] = normalise_row(s, w, b, eps, s, xhat[n])


@njit_per_dtype(_BACKWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _layernorm_backward_rows(dy, xhat, rstd, w, dx, dw_parts, db_parts):
    """dx (N, H) row by row; dw_parts, db_parts (chunks, H): the chunk sums of dy * xhat and dy."""
    N, H = dy.shape
    n_chunks = dw_parts.shape[0]
    for c in prange(n_chunks):
        for n in range(c * N // n_chunks, (c + 1) * N // n_chunks):
            mean_dxhat = 0.0
            mean_dxhat_xhat = 0.0
            for h in range(H):
                dx[n, h] = dy[n, h] * w[h]                    # y = w * xhat  ->  dxhat, kept in dx
                mean_dxhat += dx[n, h]
                mean_dxhat_xhat += dx[n, h] * xhat[n, h]
                dw_parts[c, h] += dy[n, h] * xhat[n, h]       # y = w * xhat + b  ->  dw
                db_parts[c, h] += dy[n, h]                    # y = w * xhat + b  ->  db
            mean_dxhat /= H
            mean_dxhat_xhat /= H
            for h in range(H):                                # through xhat = (x - mu) * rstd
                dx[n, h] = rstd[n, 0] * (dx[n, h] - mean_dxhat - xhat[n, h] * mean_dxhat_xhat)


def _normalise_rows(x, residual, w, b, eps):
    """(y, (xhat, rstd, w)) of LayerNorm(x + residual); residual None for plain LayerNorm."""
    H = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, H)               # (N, H)
    r2 = np.empty((0, H), x.dtype) if residual is None else np.ascontiguousarray(residual).reshape(-1, H)
    y, xhat = np.empty_like(x2), np.empty_like(x2)
    rstd = np.empty((x2.shape[0], 1), dtype=x.dtype)          # (N, 1)
    _layernorm_rows(x2, r2, np.ascontiguousarray(w), np.ascontiguousarray(b), float(eps), y, xhat,
                    rstd)
    lead = x.shape[:-1]
    return y.reshape(x.shape), (xhat.reshape(x.shape), rstd.reshape(lead + (1,)), w)


@register("layernorm_forward")
def layernorm_forward(x, w, b, eps):
    """Returns (y, (xhat, rstd, w)) like the reference; x (..., H), rstd (..., 1)."""
    if not supported(x, w, b):
        return NotImplemented
    return _normalise_rows(x, None, w, b, eps)


@register("add_layernorm_forward")
def add_layernorm_forward(x, residual, w, b, eps):
    """LayerNorm(x + residual) like the reference, without writing the sum to memory."""
    if not supported(x, residual, w, b) or x.shape != residual.shape:
        return NotImplemented
    return _normalise_rows(x, residual, w, b, eps)


@register("layernorm_backward")
def layernorm_backward(dy, cache):
    """Returns (dx, dw, db) like the reference."""
    xhat, rstd, w = cache
    if not supported(dy, xhat, rstd, w):
        return NotImplemented
    H = xhat.shape[-1]
    dy2 = np.ascontiguousarray(dy).reshape(-1, H)             # (N, H)
    dx = np.empty_like(dy2)
    n_chunks = max(1, min(dy2.shape[0], 4 * numba.get_num_threads()))
    dw_parts = np.zeros((n_chunks, H))                        # float64 partial sums
    db_parts = np.zeros((n_chunks, H))
    _layernorm_backward_rows(dy2, np.ascontiguousarray(xhat).reshape(-1, H),
                             np.ascontiguousarray(rstd).reshape(-1, 1), np.ascontiguousarray(w),
                             dx, dw_parts, db_parts)
    dtype = xhat.dtype
    return dx.reshape(xhat.shape), dw_parts.sum(axis=0).astype(dtype), db_parts.sum(axis=0).astype(dtype)
