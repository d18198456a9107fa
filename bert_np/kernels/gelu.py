"""Exact (erf) GELU forward and backward of z = x + b, element-wise, fused into one pass.

forward:   y = z * Phi(z),           Phi(z) = (1 + erf(z / sqrt 2)) / 2,   z = x + b
backward:  dz = dy * (Phi(z) + z * phi(z)),   phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
b is the bias of the Linear layer before the GELU (layers/activations.py), added as x is read.

Why it is fast: the NumPy reference builds 5 (forward) to 9 (backward) temporaries the size of the
(B, T, I) activations, one ufunc at a time. Here every element is read once and its result written
once, the rows are split over the cores with `prange`, and the backward's exp(-z^2/2), whose
argument is always <= 0, uses the vectorised exp of vecmath.py. z is never stored: the backward
adds the bias again as it reads x.
erf: in float64, libm's (a scalar call per element, exact to the last bit, so float64 results match
the reference to ~1e-16). In float32, a rational approximation x P(x^2) / Q(x^2) with the
coefficients Eigen uses for its vectorised float erf: plain multiply-adds and one division, which
LLVM vectorises; its error is below 5e-7 absolute. Beyond |x| = 3.9, erf(x) rounds to exactly +-1
in float32 (1 - erf(3.9) = 3.5e-8 is under half of float32's spacing below 1), so there it returns
+-1 exactly, as the reference does: GELU(x) for very negative x is then 0, not a rounding residue.

Indexing: every element loop runs over a 0-based range on a 1-D row. Numba turns x[i] into
x[i + n if i < 0 else i] (negative indices count from the end); LLVM removes that test only when
it can see i >= 0. With i = lo + j and lo from the parallel scheduler it cannot, the loop then
loads and stores through gathers and scatters, and ran 3-5x slower.
"""
import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..layers import activations as reference
from . import register
from .common import FLOAT_TYPES, supported
from .vecmath import exp_constants, exp_constants_type, exp_nonpositive

_ERF_P = tuple(np.float32(c) for c in (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
    -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02))
_ERF_Q = tuple(np.float32(c) for c in (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
    -1.42647390514189e-02))
_ERF_ONE = np.float32(3.9)    # |x| from which erf(x) rounds to +-1 in float32


def gelu_constants(dtype):
    """(1/2, 1, 1/sqrt(2), 1/sqrt(2 pi)) in `dtype`: a float32 kernel then never meets a float64
    constant, which would turn its arithmetic (and halve its vector width) into float64."""
    return tuple(np.dtype(dtype).type(c) for c in
                 (0.5, 1.0, 1.0 / math.sqrt(2.0), 1.0 / math.sqrt(2.0 * math.pi)))


@njit(inline="always", fastmath=True)
def erf_rational(x):
    """erf(x) ~ x P(x^2) / Q(x^2) for |x| < 3.9, exactly +-1 beyond; float32 accuracy."""
    if x >= _ERF_ONE:
        return x - x + 1                                      # 1 in the type of x
    if x <= -_ERF_ONE:
        return x - x - 1
    x2 = x * x
    p = _ERF_P[0]
    for c in _ERF_P[1:]:
        p = p * x2 + c
    q = _ERF_Q[0]
    for c in _ERF_Q[1:]:
        q = q * x2 + c
    return x * p / q


def erf_of(x):
    """erf in the precision of x: the rational form for float32, libm's for float64. Chosen when
    Numba compiles a kernel (the overload below), so the element loop has no branch on dtype."""
    return math.erf(x)


@overload(erf_of, inline="always", fastmath=True)
def _erf_of(x):
    if x == types.float32:
        return lambda x: erf_rational(x)
    return lambda x: math.erf(x)


_CONSTANTS = {t: f"UniTuple({t}, 4)" for t in FLOAT_TYPES}
_FORWARD_SIGNATURES = [f"void({t}[:, ::1], {t}[::1], {t}[:, ::1], {_CONSTANTS[t]})"
                       for t in FLOAT_TYPES]
_BACKWARD_SIGNATURES = [
    f"void({t}[:, ::1], {t}[:, ::1], {t}[::1], {t}[:, ::1], {t}[:, :, ::1], "
    f"{exp_constants_type(t)}, {_CONSTANTS[t]})" for t in FLOAT_TYPES]


@njit(_FORWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _gelu(x, b, y, consts):
    """y[n] = z * Phi(z), z = x[n] + b, for every row n; x, y (N, I), b (I,);
    consts = gelu_constants(dtype)."""
    half, one, inv_sqrt_2 = consts[0], consts[1], consts[2]
    for n in prange(x.shape[0]):
        xr, yr = x[n], y[n]                                   # see "Indexing" in the docstring
        for i in range(xr.shape[0]):
            z = xr[i] + b[i]
            yr[i] = z * half * (one + erf_of(z * inv_sqrt_2))


@njit(_BACKWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _gelu_backward(dy, x, b, dx, scratch, exp_consts, consts):
    """dx[n] = dy[n] * (Phi(z) + z phi(z)), z = x[n] + b, for every row n; dy, x, dx (N, I), b (I,);
    scratch (chunks, 2, I): two rows per chunk of rows, for the exp's argument and result."""
    half, one, inv_sqrt_2, inv_sqrt_2pi = consts[0], consts[1], consts[2], consts[3]
    N = x.shape[0]
    n_chunks = scratch.shape[0]
    for c in prange(n_chunks):
        t, pdf = scratch[c, 0], scratch[c, 1]
        for n in range(c * N // n_chunks, (c + 1) * N // n_chunks):
            xr, dyr, dxr = x[n], dy[n], dx[n]
            for i in range(xr.shape[0]):
                z = xr[i] + b[i]
                t[i] = -half * z * z                          # <= 0
            exp_nonpositive(t, half - half, pdf, exp_consts)  # exp(-z^2 / 2)
            for i in range(xr.shape[0]):
                z = xr[i] + b[i]
                cdf = half * (one + erf_of(z * inv_sqrt_2))                      # Phi(z)
                dxr[i] = dyr[i] * (cdf + z * inv_sqrt_2pi * pdf[i])


def _rows_and_bias(x, b):
    """x as C-contiguous rows (N, I) and b as (I,), zeros when there is no bias."""
    I = x.shape[-1] if x.ndim else 1
    rows = np.ascontiguousarray(x).reshape(-1, I)
    bias = np.zeros(I, x.dtype) if b is None else np.ascontiguousarray(b)
    return rows, bias


@register("gelu_forward")
def gelu_forward(x, b=None):
    """Returns (y, (x, b)) like the reference."""
    if not supported(x, b) or (b is not None and b.shape != x.shape[-1:]):
        return reference.gelu_forward.reference(x, b)
    rows, bias = _rows_and_bias(x, b)
    y = np.empty_like(rows)
    _gelu(rows, bias, y, gelu_constants(rows.dtype))
    return y.reshape(x.shape), (x, b)


@register("gelu_backward")
def gelu_backward(dy, cache):
    """Returns dz like the reference."""
    x, b = cache
    if not supported(dy, x, b) or dy.shape != x.shape:
        return reference.gelu_backward.reference(dy, cache)
    rows, bias = _rows_and_bias(x, b)
    dx = np.empty_like(rows)
    n_chunks = max(1, min(rows.shape[0], 4 * numba.get_num_threads()))
    scratch = np.empty((n_chunks, 2, rows.shape[1]), dtype=rows.dtype)
    _gelu_backward(np.ascontiguousarray(dy).reshape(rows.shape), rows, bias, dx, scratch,
                   exp_constants(rows.dtype), gelu_constants(rows.dtype))
    return dx.reshape(x.shape)
