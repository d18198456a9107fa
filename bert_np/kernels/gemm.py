"""Blocked, register-tiled matrix product C = A @ B (+ bias) in Numba; the Linear layer's kernels.

The three products of a Linear layer are one routine with different views (no transposed copy):
    forward     y  = x W^T + b     A = x (N, in),    B = W.T (in, out)   a strided view of W
    backward    dx = dy W          A = dy (N, out),  B = W (out, in)
                dW = dy^T x        A = dy.T (out, N) a strided view,  B = x (N, in)

Why it is fast (the Goto/BLIS scheme, simplified):
  1. Register tile. The micro-kernel computes a 4 x 4 block of C as 16 dot products of length kc,
     running over k together: each step loads 4 values of A and 4 of B and does 16 multiply-adds.
     Written out as 16 scalar accumulators with k innermost, LLVM vectorises the k loop: 8 vector
     loads feed 16 vector FMAs held in 16 of the 32 vector registers, and C is touched only once
     per kc steps. A plain triple loop does one load per multiply-add and is load-bound.
  2. Packing. A block of A (MC x KC) and a block of B (KC x NC) are copied into buffers in which
     every 4-row panel is contiguous along k (zero-padded to a multiple of 4 rows). Whatever the
     strides of the views above, the micro-kernel then reads unit-stride memory, and the odd edges
     of the matrix cost no special case. The copy is O(MK + KN) per block against O(MNK) work.
  3. Cache blocking. KC = 384 keeps the two panels the micro-kernel streams (8 x 384 values) in
     L1; a packed A block (MC x KC) stays in L2 while every panel of the packed B block passes it.
  4. Threads. The MC-row blocks of C are independent: `prange` hands them to the cores, each
     packing its own A block and sharing the packed B block.
Epilogue: the bias is added as the first k-block is written, so y = x W^T + b costs no extra pass.
"""
import numpy as np
from numba import njit, prange

from ..layers import linear as reference_linear
from . import register
from .common import FLOAT_TYPES, supported

MR = 4      # rows of a register tile (A panel height)
NR = 4      # columns of a register tile (B panel height)
KC = 384    # k-block: the depth of the panels the micro-kernel streams from L1
MC = 96     # rows of A packed per block (per thread), kept in L2
NC = 512    # columns of B packed per block, shared by the threads

_SIGNATURES = [f"void({t}[:, :], {t}[:, :], {t}[:], {t}[:, ::1])" for t in FLOAT_TYPES]
_PACK_SIGNATURES = [f"void({t}[:, :], int64, int64, int64, int64, {t}[:, :, ::1])"
                    for t in FLOAT_TYPES]


@njit(_PACK_SIGNATURES, cache=True, fastmath=True)
def _pack_panels(src, r0, rows, k0, kc, out):
    """out[p, i, k] = src[r0 + 4p + i, k0 + k]: rows of src as 4-row panels contiguous along k.

    src (R, K) any strides; out (ceil(rows / 4), 4, KC). Rows past `rows` are zero. The loop whose
    index follows src's unit stride runs innermost, so the reads are sequential either way.
    """
    padded = out.shape[0] * MR
    if src.strides[1] <= src.strides[0]:                      # rows of src are contiguous
        for r in range(padded):
            for k in range(kc):
                out[r // MR, r % MR, k] = src[r0 + r, k0 + k] if r < rows else 0.0
    else:                                                     # columns of src are contiguous
        for k in range(kc):
            for r in range(padded):
                out[r // MR, r % MR, k] = src[r0 + r, k0 + k] if r < rows else 0.0


@njit(cache=True, fastmath=True, inline="always")
def _micro_tile(ap, bp, kc):
    """The 4 x 4 block sum_k ap[i, k] * bp[j, k]; ap, bp (4, KC) panels, contiguous along k."""
    zero = ap[0, 0] - ap[0, 0]                                # 0 in the dtype of the panels
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = zero
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = zero
    for k in range(kc):
        a0, a1, a2, a3 = ap[0, k], ap[1, k], ap[2, k], ap[3, k]
        b0, b1, b2, b3 = bp[0, k], bp[1, k], bp[2, k], bp[3, k]
        c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3  # noqa: E702
        c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3  # noqa: E702
        c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3  # noqa: E702
        c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3  # noqa: E702
    return ((c00, c01, c02, c03), (c10, c11, c12, c13),
            (c20, c21, c22, c23), (c30, c31, c32, c33))


@njit(cache=True, fastmath=True, inline="always")
def _store_tile(c, tile, i0, j0, mr, nr, first_block, bias):
    """C[i0:i0+mr, j0:j0+nr] = tile (+ bias) on the first k-block, += tile on the later ones."""
    for i in range(mr):
        for j in range(nr):
            if not first_block:
                c[i0 + i, j0 + j] += tile[i][j]
            elif bias.shape[0] > 0:
                c[i0 + i, j0 + j] = tile[i][j] + bias[j0 + j]
            else:
                c[i0 + i, j0 + j] = tile[i][j]


@njit(cache=True, fastmath=True, inline="always")
def _multiply_block(apk, bpk, mc, nc, kc, c, ic, jc, first_block, bias):
    """C[ic:ic+mc, jc:jc+nc] (+)= packed A block x packed B block, one 4 x 4 tile at a time.

    The B panel of the outer loop stays in L1 while the A panels of the inner loop stream from L2.
    """
    for jr in range(bpk.shape[0]):
        nr = min(NR, nc - jr * NR)
        for ir in range(apk.shape[0]):
            mr = min(MR, mc - ir * MR)
            tile = _micro_tile(apk[ir], bpk[jr], kc)
            _store_tile(c, tile, ic + ir * MR, jc + jr * NR, mr, nr, first_block, bias)


@njit(_SIGNATURES, cache=True, fastmath=True, parallel=True)
def gemm(a, b, bias, c):
    """c = a @ b + bias; a (M, K) and b (K, N) of any strides, bias (N,) or (0,) for none, c (M, N).

    Loop nest: NC columns of C at a time; for each KC-deep slice of k, pack that B block once
    (threads split its panels), then the threads take MC-row blocks of C, pack the A block and
    run the micro-kernel over it.
    """
    M, K = a.shape
    N = b.shape[1]
    bt = b.T                                                  # (N, K) view: B's columns as rows
    for jc in range(0, N, NC):
        nc = min(NC, N - jc)
        for pc in range(0, K, KC):
            kc = min(KC, K - pc)
            bpk = np.empty(((nc + NR - 1) // NR, NR, KC), dtype=c.dtype)
            for jp in prange(bpk.shape[0]):
                rows = min(NR, nc - jp * NR)
                _pack_panels(bt, jc + jp * NR, rows, pc, kc, bpk[jp:jp + 1])
            for ib in prange((M + MC - 1) // MC):
                ic = ib * MC
                mc = min(MC, M - ic)
                apk = np.empty(((mc + MR - 1) // MR, MR, KC), dtype=c.dtype)
                _pack_panels(a, ic, mc, pc, kc, apk)
                _multiply_block(apk, bpk, mc, nc, kc, c, ic, jc, pc == 0, bias)


def matmul(a, b, bias=None):
    """a (M, K) @ b (K, N) (+ bias (N,)) into a new C-contiguous (M, N) array."""
    c = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
    if a.shape[1] == 0:                                       # an empty sum: C = 0 (+ bias)
        return c if bias is None else c + bias
    gemm(a, b, np.zeros(0, a.dtype) if bias is None else bias, c)
    return c


@register("linear_forward")
def linear_forward(x, w, b):
    """y = x @ w.T + b with the bias fused into the GEMM; returns (y, (x, w)) like the reference."""
    if not supported(x, w, b):
        return reference_linear.linear_forward.reference(x, w, b)
    x2 = x.reshape(-1, x.shape[-1])                           # (N, in), a view when possible
    y = matmul(x2, w.T, b)                                    # (N, out)
    return y.reshape(x.shape[:-1] + (w.shape[0],)), (x, w)


@register("linear_backward")
def linear_backward(dy, cache):
    """dx = dy @ w, dw = dy^T @ x, db = sum_n dy, each GEMM reading the views it is given."""
    x, w = cache
    if not supported(dy, x, w):
        return reference_linear.linear_backward.reference(dy, cache)
    x2 = x.reshape(-1, x.shape[-1])                           # (N, in)
    dy2 = dy.reshape(-1, dy.shape[-1])                        # (N, out)
    dx = matmul(dy2, w).reshape(x.shape)                      # y = x W^T   ->  dx = dy W
    dw = matmul(dy2.T, x2)                                    # y = x W^T   ->  dW = dy^T x
    db = dy2.sum(axis=0)                                      # y = ... + b ->  db = sum_n dy
    return dx, dw, db
