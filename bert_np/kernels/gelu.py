"""Exact (erf) GELU forward and backward, element-wise in one pass; and the feed-forward's
`linear_act` (Linear then GELU) with the bias added in the GELU's pass.

forward:   y = z * Phi(z),           Phi(z) = (1 + erf(z / sqrt 2)) / 2
backward:  dz = dy * (Phi(z) + z * phi(z)),   phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
linear_act_forward (act "gelu"):  z = x W^T (np.matmul), then z += b and y = GELU(z) in one pass;
its backward is the reference's composition, whose GELU backward is the kernel here.

Why it is fast: the NumPy reference builds 5 (forward) to 9 (backward) temporaries the size of the
(B, T, I) activations, one ufunc at a time. Here every element is read once and its result written
once, the rows are split over the cores with `prange`, and the backward's exp(-z^2/2), whose
argument is always <= 0, uses the vectorised exp of vecmath.py. In linear_act_forward the bias of
the Linear layer is added as the GELU reads the product, which saves the separate pass over the
(B, T, I) activations that `y += b` would make.
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
import functools
import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported
from .vecmath import exp_constants, exp_constants_type, exp_nonpositive

_ERF_P = tuple(np.float32(c) for c in (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
    -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02))
_ERF_Q = tuple(np.float32(c) for c in (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
    -1.42647390514189e-02))
_ERF_ONE = np.float32(3.9)    # |x| from which erf(x) rounds to +-1 in float32


@functools.lru_cache(maxsize=None)      # built once per dtype, not at every call
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
    f"void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[:, :, ::1], "
    f"{exp_constants_type(t)}, {_CONSTANTS[t]})" for t in FLOAT_TYPES]


@njit(cache=True, fastmath=True, error_model="numpy")
def gelu_row(z, y, consts):
    """y = z * Phi(z) for one row z (I,), y (I,) distinct; consts = gelu_constants(dtype). A
    function of its own, compiled with fast math wherever it is called from (kernels/int8.py's
    feed-forward calls it from code compiled without), so every caller computes the same values.
    NumPy's error model: with Python's, each division of erf_rational tests for a zero divisor
    (to raise ZeroDivisionError), and that branch keeps LLVM from vectorising the loop (a
    `parallel=True` kernel gets NumPy's model anyway)."""
    half, one, inv_sqrt_2 = consts[0], consts[1], consts[2]
    for i in range(z.shape[0]):
        zi = z[i]
        y[i] = zi * half * (one + erf_of(zi * inv_sqrt_2))


@njit_per_dtype(_FORWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _gelu(z, b, y, consts):
    """z[n] += b (when b has entries) and y[n] = z[n] * Phi(z[n]) for every row n; z, y (N, I),
    b (I,) or empty; consts = gelu_constants(dtype)."""
    add_bias = b.shape[0] > 0
    for n in prange(z.shape[0]):
        zr, yr = z[n], y[n]                                   # see "Indexing" in the docstring
        if add_bias:
            for i in range(zr.shape[0]):
                zr[i] += b[i]
        gelu_row(zr, yr, consts)


@njit_per_dtype(_BACKWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _gelu_backward(dy, z, dz, scratch, exp_consts, consts):
    """dz[n] = dy[n] * (Phi(z) + z phi(z)) for every row n; dy, z, dz (N, I);
    scratch (chunks, 2, I): two rows per chunk of rows, for the exp's argument and result."""
    half, one, inv_sqrt_2, inv_sqrt_2pi = consts[0], consts[1], consts[2], consts[3]
    N = z.shape[0]
    n_chunks = scratch.shape[0]
    for c in prange(n_chunks):
        t, pdf = scratch[c, 0], scratch[c, 1]
        for n in range(c * N // n_chunks, (c + 1) * N // n_chunks):
            zr, dyr, dzr = z[n], dy[n], dz[n]
            for i in range(zr.shape[0]):
                t[i] = -half * zr[i] * zr[i]                  # <= 0
            exp_nonpositive(t, half - half, pdf, exp_consts)  # exp(-z^2 / 2)
            for i in range(zr.shape[0]):
                zi = zr[i]
                cdf = half * (one + erf_of(zi * inv_sqrt_2))                     # Phi(z)
                dzr[i] = dyr[i] * (cdf + zi * inv_sqrt_2pi * pdf[i])


def _rows(x):
    """x as C-contiguous rows (N, I) (a view when it already is)."""
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1] if x.ndim else 1)


@register("gelu_forward")
def gelu_forward(x):
    """Returns (y, x) like the reference."""
    if not supported(x):
        return NotImplemented
    rows = _rows(x)
    y = np.empty_like(rows)
    _gelu(rows, np.empty(0, rows.dtype), y, gelu_constants(rows.dtype))
    return y.reshape(x.shape), x


@register("gelu_backward")
def gelu_backward(dy, x):
    """Returns dx like the reference."""
    if not supported(dy, x) or dy.shape != x.shape:
        return NotImplemented
    rows = _rows(x)
    dx = np.empty_like(rows)
    n_chunks = max(1, min(rows.shape[0], 4 * numba.get_num_threads()))
    scratch = np.empty((n_chunks, 2, rows.shape[1]), dtype=rows.dtype)
    _gelu_backward(np.ascontiguousarray(dy).reshape(rows.shape), rows, dx, scratch,
                   exp_constants(rows.dtype), gelu_constants(rows.dtype))
    return dx.reshape(x.shape)


@register("linear_act_forward")
def linear_act_forward(x, w, b, act):
    """(y, ((x, w), z, act)) like the reference, for act "gelu" with a bias; z = x W^T + b is
    formed in the product's output by the GELU's pass."""
    if act != "gelu" or b is None or not supported(x, w, b) or b.shape != w.shape[:1]:
        return NotImplemented
    z = np.matmul(x.reshape(-1, x.shape[-1]), w.T)           # (N, I) = x W^T, C-contiguous
    y = np.empty_like(z)
    _gelu(z, np.ascontiguousarray(b), y, gelu_constants(z.dtype))   # z += b;  y = GELU(z)
    shape = x.shape[:-1] + w.shape[:1]
    return y.reshape(shape), ((x, w), z.reshape(shape), act)
