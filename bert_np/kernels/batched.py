"""The attention's batched matrix products, one small GEMM per (batch, head), in parallel.

    scores:  S = Q K^T      context: C = P V          (forward)
    dP = dC V^T,  dV = P^T dC,  dQ = dS K,  dK = dS^T Q  (backward)
Each is a stack of B*A small products (T x T x D, D = 32..64). NumPy's stacked matmul calls BLAS
once per product, and a multi-threaded BLAS on a 128 x 64 matrix spends much of its time
starting and synchronising threads; when the machine is busy that overhead explodes.

Here the stack is split over the cores with `prange`, one whole product per task, no threading
inside a product. Each product runs the loops of the Linear layer's GEMM compiled without threads
(`gemm.gemm_one_thread`): its packing copies the operands into panels laid out for the 8 x 16
register tile, which also absorbs the transposes and the strided head views of split_heads, so
nothing is transposed in memory beforehand.
"""
import numpy as np
from numba import prange

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported
from .gemm import gemm_one_thread

_SIGNATURES = [f"void({t}[:, :, :, :], {t}[:, :, :, :], boolean, boolean, {t}[:, :, :, ::1])"
               for t in FLOAT_TYPES]


@njit_per_dtype(_SIGNATURES, cache=True, fastmath={"contract"}, parallel=True)
def _batched(a, b, transpose_a, transpose_b, out):
    """out[x, y] = op(a[x, y]) @ op(b[x, y]) for every (x, y) of the two leading axes."""
    X, Y = out.shape[0], out.shape[1]
    no_bias = np.empty(0, dtype=out.dtype)
    for xy in prange(X * Y):
        x, y = xy // Y, xy % Y
        a_xy = a[x, y].T if transpose_a else a[x, y]
        b_xy = b[x, y].T if transpose_b else b[x, y]
        gemm_one_thread(a_xy, b_xy, no_bias, out[x, y])


def _run(a, b, transpose_a, transpose_b):
    if not supported(a, b) or a.ndim != 4 or b.ndim != 4:
        return NotImplemented
    M = a.shape[3] if transpose_a else a.shape[2]
    N = b.shape[2] if transpose_b else b.shape[3]
    out = np.empty(a.shape[:2] + (M, N), dtype=a.dtype)
    _batched(a, b, transpose_a, transpose_b, out)
    return out


@register("batched_matmul")
def batched_matmul(a, b):
    """a @ b over the two leading axes, like the reference."""
    return _run(a, b, False, False)


@register("batched_matmul_nt")
def batched_matmul_nt(a, b):
    """a @ b^T (last two axes), like the reference."""
    return _run(a, b, False, True)


@register("batched_matmul_tn")
def batched_matmul_tn(a, b):
    """a^T @ b (last two axes), like the reference."""
    return _run(a, b, True, False)
