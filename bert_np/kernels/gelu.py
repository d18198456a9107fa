"""Exact (erf) GELU forward and backward, element-wise, fused into one pass.

forward:   y = x * Phi(x),           Phi(x) = (1 + erf(x / sqrt 2)) / 2
backward:  dx = dy * (Phi(x) + x * phi(x)),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

Why it is fast: the NumPy reference builds 4 (forward) to 8 (backward) temporaries the size of the
(B, T, I) activations, one ufunc at a time. Here every element is read once and its result written
once, the blocks of 4096 elements are split over the cores with `prange`, and the backward's
exp(-x^2/2), whose argument is always <= 0, uses the vectorised exp of vecmath.py.
erf: in float64, libm's (a scalar call per element, exact to the last bit, so float64 results match
the reference to ~1e-16). In float32, a rational approximation x P(x^2) / Q(x^2) with the
coefficients Eigen uses for its vectorised float erf: plain multiply-adds and one division, which
LLVM vectorises; its error is below 5e-7 absolute. Beyond |x| = 3.9, erf(x) rounds to exactly +-1
in float32 (1 - erf(3.9) = 3.5e-8 is under half of float32's spacing below 1), so there it returns
+-1 exactly, as the reference does: GELU(x) for very negative x is then 0, not a rounding residue.

Indexing: every element loop runs over a 0-based range on a 1-D slice. Numba turns x[i] into
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

BLOCK = 4096   # elements per step; the backward's two scratch rows of this size stay in L1/L2
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
_FORWARD_SIGNATURES = [f"void({t}[::1], {t}[::1], {_CONSTANTS[t]})" for t in FLOAT_TYPES]
_BACKWARD_SIGNATURES = [
    f"void({t}[::1], {t}[::1], {t}[::1], {t}[:, :, ::1], {exp_constants_type(t)}, {_CONSTANTS[t]})"
    for t in FLOAT_TYPES]


@njit(_FORWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _gelu(x, y, consts):
    """y = x * Phi(x); x, y (n,); consts = gelu_constants(dtype)."""
    half, one, inv_sqrt_2 = consts[0], consts[1], consts[2]
    for blk in prange((x.shape[0] + BLOCK - 1) // BLOCK):
        lo, hi = blk * BLOCK, min((blk + 1) * BLOCK, x.shape[0])
        xb, yb = x[lo:hi], y[lo:hi]                           # see "Indexing" in the docstring
        for i in range(hi - lo):
            yb[i] = xb[i] * half * (one + erf_of(xb[i] * inv_sqrt_2))


@njit(_BACKWARD_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _gelu_backward(dy, x, dx, scratch, exp_consts, consts):
    """dx = dy * (Phi(x) + x phi(x)); dy, x, dx (n,); scratch (chunks, 2, BLOCK) per-chunk rows,
    zeros at the start.

    Chunk c of the n elements is done BLOCK elements at a time in its own scratch rows. The exp
    runs over whole rows; after a short last block their tails hold earlier values of z, which
    are <= 0 (or the initial zeros), so no garbage reaches the exp.
    """
    half, one, inv_sqrt_2, inv_sqrt_2pi = consts[0], consts[1], consts[2], consts[3]
    n = x.shape[0]
    n_chunks = scratch.shape[0]
    for c in prange(n_chunks):
        z, pdf = scratch[c, 0], scratch[c, 1]
        for lo in range(c * n // n_chunks, (c + 1) * n // n_chunks, BLOCK):
            m = min(BLOCK, (c + 1) * n // n_chunks - lo)
            xb, dyb, dxb = x[lo:lo + m], dy[lo:lo + m], dx[lo:lo + m]
            for i in range(m):
                z[i] = -half * xb[i] * xb[i]                  # <= 0
            exp_nonpositive(z, half - half, pdf, exp_consts)  # exp(-x^2 / 2)
            for i in range(m):
                cdf = half * (one + erf_of(xb[i] * inv_sqrt_2))                  # Phi(x)
                dxb[i] = dyb[i] * (cdf + xb[i] * inv_sqrt_2pi * pdf[i])


@register("gelu_forward")
def gelu_forward(x):
    """Returns (y, x) like the reference."""
    if not supported(x):
        return reference.gelu_forward.reference(x)
    x1 = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(x1)
    _gelu(x1, y, gelu_constants(x1.dtype))
    return y.reshape(x.shape), x


@register("gelu_backward")
def gelu_backward(dy, x):
    """Returns dx like the reference."""
    if not supported(dy, x):
        return reference.gelu_backward.reference(dy, x)
    x1 = np.ascontiguousarray(x).reshape(-1)
    dx = np.empty_like(x1)
    dtype = x1.dtype
    n_chunks = max(1, min((x1.size + BLOCK - 1) // BLOCK, 4 * numba.get_num_threads()))
    scratch = np.zeros((n_chunks, 2, BLOCK), dtype=dtype)
    _gelu_backward(np.ascontiguousarray(dy).reshape(-1), x1, dx, scratch, exp_constants(dtype),
                   gelu_constants(dtype))
    return dx.reshape(x.shape)
