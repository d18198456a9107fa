"""The attention's batched matrix products, one small GEMM per (batch, head), in parallel.

    scores:  S = Q K^T      context: C = P V          (forward)
    dP = dC V^T,  dV = P^T dC,  dQ = dS K,  dK = dS^T Q  (backward)
Each is a stack of B*A small products (T x T x D, D = 32..64). NumPy's stacked matmul calls BLAS
once per product, and a multi-threaded BLAS on a 128 x 64 matrix spends much of its time
starting and synchronising threads; when the machine is busy that overhead explodes.

Here the stack is split over the cores with `prange`, one whole product per task, no threading
inside a product. Each product first copies its two operands into small contiguous buffers laid
out for the inner loop (this also absorbs the transposes and the strided head views of split_heads,
so nothing is transposed in memory beforehand), then runs C = A B four rows at a time: for every k
the four scalars A[i..i+3, k] multiply one contiguous row of B, so each loaded element of B feeds
four fused multiply-adds and the four output rows stay in L1. The inner loop over columns is
contiguous and LLVM vectorises it.
"""
import numpy as np
from numba import njit, prange

from ..layers import attention as reference
from . import register
from .common import FLOAT_TYPES, supported

_SIGNATURES = [f"void({t}[:, :, :, :], {t}[:, :, :, :], boolean, boolean, {t}[:, :, :, ::1])"
               for t in FLOAT_TYPES]


@njit(cache=True, fastmath=True, inline="always")
def _matmul_rows(a, b, c):
    """c = a @ b for contiguous a (M, K), b (K, N), c (M, N), four rows of c at a time."""
    M, K = a.shape
    N = b.shape[1]
    for i0 in range(0, M, 4):
        rows = min(4, M - i0)
        for r in range(rows):
            for j in range(N):
                c[i0 + r, j] = 0.0
        if rows == 4:
            for k in range(K):
                a0, a1, a2, a3 = a[i0, k], a[i0 + 1, k], a[i0 + 2, k], a[i0 + 3, k]
                for j in range(N):
                    bkj = b[k, j]
                    c[i0, j] += a0 * bkj
                    c[i0 + 1, j] += a1 * bkj
                    c[i0 + 2, j] += a2 * bkj
                    c[i0 + 3, j] += a3 * bkj
        else:
            for r in range(rows):
                for k in range(K):
                    aik = a[i0 + r, k]
                    for j in range(N):
                        c[i0 + r, j] += aik * b[k, j]


@njit(_SIGNATURES, cache=True, fastmath=True, parallel=True)
def _batched(a, b, transpose_a, transpose_b, out):
    """out[x, y] = op(a[x, y]) @ op(b[x, y]) for every (x, y) of the two leading axes."""
    X, Y = out.shape[0], out.shape[1]
    M, N = out.shape[2], out.shape[3]
    K = a.shape[2] if transpose_a else a.shape[3]
    for xy in prange(X * Y):
        x, y = xy // Y, xy % Y
        a_packed = np.empty((M, K), dtype=out.dtype)
        b_packed = np.empty((K, N), dtype=out.dtype)
        for i in range(M):
            for k in range(K):
                a_packed[i, k] = a[x, y, k, i] if transpose_a else a[x, y, i, k]
        for k in range(K):
            for j in range(N):
                b_packed[k, j] = b[x, y, j, k] if transpose_b else b[x, y, k, j]
        _matmul_rows(a_packed, b_packed, out[x, y])


def _run(a, b, transpose_a, transpose_b, fallback):
    if not supported(a, b) or a.ndim != 4 or b.ndim != 4:
        return fallback.reference(a, b)
    M = a.shape[3] if transpose_a else a.shape[2]
    N = b.shape[2] if transpose_b else b.shape[3]
    out = np.empty(a.shape[:2] + (M, N), dtype=a.dtype)
    _batched(a, b, transpose_a, transpose_b, out)
    return out


@register("batched_matmul")
def batched_matmul(a, b):
    """a @ b over the two leading axes, like the reference."""
    return _run(a, b, False, False, reference.batched_matmul)


@register("batched_matmul_nt")
def batched_matmul_nt(a, b):
    """a @ b^T (last two axes), like the reference."""
    return _run(a, b, False, True, reference.batched_matmul_nt)


@register("batched_matmul_tn")
def batched_matmul_tn(a, b):
    """a^T @ b (last two axes), like the reference."""
    return _run(a, b, True, False, reference.batched_matmul_tn)
