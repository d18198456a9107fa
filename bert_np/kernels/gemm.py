"""Blocked, register-tiled matrix product C = A @ B (+ bias) in Numba; the Linear layer's kernels.

The three products of a Linear layer are one routine with different views (no transposed copy):
    forward     y  = x W^T + b     A = x (N, in),    B = W.T (in, out)   a strided view of W
    backward    dx = dy W          A = dy (N, out),  B = W (out, in)
                dW = dy^T x        A = dy.T (out, N) a strided view,  B = x (N, in)

Why it is fast (the Goto/BLIS scheme):
  1. Register tile. The micro-kernel keeps an 8 x 16 block of C in registers while it runs over k.
     Each step reads 8 values of A and one row of 16 values of B and does 8 x 16 multiply-adds:
     row i of the tile gets a[i] * b[0:16], one broadcast and one vector FMA (16 float32 lanes with
     AVX-512). That is 8 FMAs per vector load, where a plain triple loop does one load (and one
     store) per multiply-add and is bound by memory, not arithmetic.
     Numba has no vector type, so each row of the tile is a 16-element array on the stack
     (`_register_row`). Nothing else can point at it, so LLVM keeps all of it in registers for the
     whole k loop, and vectorises the j loop into one FMA per row.
  2. Packing. A block of A (MC x KC) and a block of B (KC x NC) are copied into buffers in which
     every 8-row panel of A and every 16-column panel of B is contiguous along k (zero-padded at
     the edges). Whatever the strides of the views above, the micro-kernel then reads unit-stride
     memory, and the odd edges of the matrix cost no special case. The copy is O(MK + KN) per block
     against O(MNK) work.
  3. Cache blocking. KC = 384 keeps the two panels the micro-kernel streams (24 x 384 float32,
     36 KB) in L1; a packed A block (MC x KC) stays in L2 while every panel of the packed B block
     passes it.
  4. Threads. The MC-row blocks of C are independent: `prange` hands them to the cores, each
     packing its own A block and sharing the packed B block.
Epilogue: the bias is added as the first k-block is written, so y = x W^T + b costs no extra pass.

fastmath is limited to "contract" (fused multiply-add) in the micro-kernel: allowing reassociation
would let LLVM vectorise over k instead, turning the 128 accumulators into horizontal sums.

The pieces other kernels build on (kernels/attention.py's per-head products): `pack_panels`,
`micro_tile` (8 x 16), `micro_tile_wide` (8 x 32), `store_tile` (the epilogue), `MR` and `NR`.
"""
import numpy as np
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported

MR = 8      # rows of the register tile (A panel width)
NR = 16     # columns of the register tile (B panel width): one AVX-512 float32 vector
KC = 384    # k-block: the depth of the panels the micro-kernel streams from L1
MC = 96     # rows of A packed per block (per thread), kept in L2
NC = 1024   # columns of B packed per block, shared by the threads

_SIGNATURES = [f"void({t}[:, :], {t}[:, :], {t}[:], {t}[:, ::1])" for t in FLOAT_TYPES]


@intrinsic
def _stack_row(typingctx, dtype):
    """A pointer to NR values of `dtype` on the stack of the calling function (an LLVM alloca)."""
    def codegen(context, builder, signature, args):
        element = context.get_value_type(dtype.dtype)
        return cgutils.alloca_once(builder, element, size=context.get_constant(types.intp, NR))
    return types.CPointer(dtype.dtype)(dtype), codegen


@njit(cache=True, inline="always")
def _register_row(dtype):
    """One row of the register tile: an (NR,) array that LLVM promotes to vector registers."""
    return carray(_stack_row(dtype), (NR,))


@njit(cache=True)
def pack_panels(src, r0, rows, k0, kc, out):
    """out[p, k, i] = src[r0 + w*p + i, k0 + k], w = out.shape[2]: rows of src cut into panels of
    w rows, each stored k-major so the micro-kernel reads one contiguous run of w values per k.

    src (R, K) any strides; out (panels, KC, w). Rows past `rows` are zero. The loop whose index
    follows src's unit stride runs innermost, so the reads are sequential either way. Every loop
    indexes a view from 0: Numba tests each index for a negative value (counting from the end),
    and LLVM drops that test only for indices it can see are >= 0 (see kernels/gelu.py).
    """
    width = out.shape[2]
    rows_first = src.strides[1] <= src.strides[0]            # rows of src are contiguous
    for p in range(out.shape[0]):
        n = min(width, rows - p * width)                      # rows of src in this panel
        panel = src[r0 + p * width:r0 + p * width + n, k0:k0 + kc]   # 0-based below: no wraparound
        dst = out[p]                                          # (KC, w)
        if rows_first:
            for i in range(n):
                for k in range(kc):
                    dst[k, i] = panel[i, k]
        else:
            for k in range(kc):
                for i in range(n):
                    dst[k, i] = panel[i, k]
        for k in range(kc):
            for i in range(n, width):
                dst[k, i] = 0.0


@njit(cache=True, fastmath={"contract"}, inline="always")
def micro_tile(ap, bp, kc, tile):
    """tile = sum_k ap[k, i] * bp[k, j], the 8 x 16 register tile; ap (KC, 8), bp (KC, 16) panels.

    Rows c0..c7 of the tile live in registers for the whole k loop; they are written to `tile`
    (MR, NR) once at the end.
    """
    c0, c1, c2, c3 = (_register_row(tile.dtype), _register_row(tile.dtype),
                      _register_row(tile.dtype), _register_row(tile.dtype))
    c4, c5, c6, c7 = (_register_row(tile.dtype), _register_row(tile.dtype),
                      _register_row(tile.dtype), _register_row(tile.dtype))
    for j in range(NR):
        c0[j] = c1[j] = c2[j] = c3[j] = c4[j] = c5[j] = c6[j] = c7[j] = 0.0
    for k in range(kc):
        a0, a1, a2, a3 = ap[k, 0], ap[k, 1], ap[k, 2], ap[k, 3]
        a4, a5, a6, a7 = ap[k, 4], ap[k, 5], ap[k, 6], ap[k, 7]
        for j in range(NR):                                   # one vector FMA per row
            b = bp[k, j]
            c0[j] += a0 * b; c1[j] += a1 * b; c2[j] += a2 * b; c3[j] += a3 * b  # noqa: E702
            c4[j] += a4 * b; c5[j] += a5 * b; c6[j] += a6 * b; c7[j] += a7 * b  # noqa: E702
    for j in range(NR):
        tile[0, j], tile[1, j], tile[2, j], tile[3, j] = c0[j], c1[j], c2[j], c3[j]
        tile[4, j], tile[5, j], tile[6, j], tile[7, j] = c4[j], c5[j], c6[j], c7[j]


@njit(cache=True, fastmath={"contract"}, inline="always")
def micro_tile_wide(ap, bp0, bp1, kc, tile):
    """tile (8, 32) = sum_k ap[k, i] * [bp0[k, :], bp1[k, :]]: the 8 x 16 tile of `micro_tile`
    over two adjacent B panels at once, 16 rows of registers.

    Each step loads the 8 values of A once for 16 vector FMAs instead of 8, so the loads (8
    broadcasts and 2 vectors for 16 FMAs, against 8 and 1 for 8) no longer keep the FMA units
    waiting (kernels/attention.py uses it).
    """
    c0, c1, c2, c3 = (_register_row(tile.dtype), _register_row(tile.dtype),
                      _register_row(tile.dtype), _register_row(tile.dtype))
    c4, c5, c6, c7 = (_register_row(tile.dtype), _register_row(tile.dtype),
                      _register_row(tile.dtype), _register_row(tile.dtype))
    d0, d1, d2, d3 = (_register_row(tile.dtype), _register_row(tile.dtype),
                      _register_row(tile.dtype), _register_row(tile.dtype))
    d4, d5, d6, d7 = (_register_row(tile.dtype), _register_row(tile.dtype),
                      _register_row(tile.dtype), _register_row(tile.dtype))
    for j in range(NR):
        c0[j] = c1[j] = c2[j] = c3[j] = c4[j] = c5[j] = c6[j] = c7[j] = 0.0
        d0[j] = d1[j] = d2[j] = d3[j] = d4[j] = d5[j] = d6[j] = d7[j] = 0.0
    for k in range(kc):
        a0, a1, a2, a3 = ap[k, 0], ap[k, 1], ap[k, 2], ap[k, 3]
        a4, a5, a6, a7 = ap[k, 4], ap[k, 5], ap[k, 6], ap[k, 7]
        for j in range(NR):                                   # panel 0: one vector FMA per row
            b = bp0[k, j]
            c0[j] += a0 * b; c1[j] += a1 * b; c2[j] += a2 * b; c3[j] += a3 * b  # noqa: E702
            c4[j] += a4 * b; c5[j] += a5 * b; c6[j] += a6 * b; c7[j] += a7 * b  # noqa: E702
        for j in range(NR):                                   # panel 1
            b = bp1[k, j]
            d0[j] += a0 * b; d1[j] += a1 * b; d2[j] += a2 * b; d3[j] += a3 * b  # noqa: E702
            d4[j] += a4 * b; d5[j] += a5 * b; d6[j] += a6 * b; d7[j] += a7 * b  # noqa: E702
    left, right = tile[:, :NR], tile[:, NR:2 * NR]
    for j in range(NR):
        left[0, j], left[1, j], left[2, j], left[3, j] = c0[j], c1[j], c2[j], c3[j]
        left[4, j], left[5, j], left[6, j], left[7, j] = c4[j], c5[j], c6[j], c7[j]
        right[0, j], right[1, j], right[2, j], right[3, j] = d0[j], d1[j], d2[j], d3[j]
        right[4, j], right[5, j], right[6, j], right[7, j] = d4[j], d5[j], d6[j], d7[j]


@njit(cache=True, inline="always")
def store_tile(c, tile, i0, j0, mr, nr, first_block, bias):
    """C[i0:i0+mr, j0:j0+nr] = tile (+ bias) on the first k-block, += tile on the later ones.

    The test sits outside the loops so that each row is one vectorised load-add-store.
    """
    block = c[i0:i0 + mr, j0:j0 + nr]                         # 0-based loops: no wraparound
    if not first_block:
        for i in range(mr):
            for j in range(nr):
                block[i, j] += tile[i, j]
    elif bias.shape[0] > 0:
        bias_block = bias[j0:j0 + nr]
        for i in range(mr):
            for j in range(nr):
                block[i, j] = tile[i, j] + bias_block[j]
    else:
        for i in range(mr):
            for j in range(nr):
                block[i, j] = tile[i, j]


@njit(cache=True, inline="always")
def _multiply_block(apk, bpk, mc, nc, kc, c, ic, jc, first_block, bias):
    """C[ic:ic+mc, jc:jc+nc] (+)= packed A block x packed B block, one 8 x 16 tile at a time.

    The B panel of the outer loop stays in L1 while the A panels of the inner loop stream from L2.
    """
    tile = np.empty((MR, NR), dtype=c.dtype)
    for jr in range(bpk.shape[0]):
        nr = min(NR, nc - jr * NR)
        for ir in range(apk.shape[0]):
            mr = min(MR, mc - ir * MR)
            micro_tile(apk[ir], bpk[jr], kc, tile)
            store_tile(c, tile, ic + ir * MR, jc + jr * NR, mr, nr, first_block, bias)


def _gemm_loops(a, b, bias, c):
    """c = a @ b + bias; a (M, K) and b (K, N) of any strides, bias (N,) or (0,) for none, c (M, N).

    Loop nest: NC columns of C at a time; for each KC-deep slice of k, pack that B block once
    (threads split its panels), then the threads take MC-row blocks of C, pack the A block and
    run the micro-kernel over it. Compiled twice below: with `prange` running on the cores
    (`gemm`), and as plain loops on the calling thread (`gemm_one_thread`).
    """
    M, K = a.shape
    N = b.shape[1]
    if K == 0:                                                # an empty sum: C = bias (or 0)
        for i in range(M):
            for j in range(N):
                c[i, j] = bias[j] if bias.shape[0] > 0 else 0.0
        return
    bt = b.T                                                  # (N, K) view: B's columns as rows
    depth = min(KC, K)                                        # small buffers for small products
    for jc in range(0, N, NC):
        nc = min(NC, N - jc)
        for pc in range(0, K, KC):
            kc = min(KC, K - pc)
            bpk = np.empty(((nc + NR - 1) // NR, depth, NR), dtype=c.dtype)
            for jp in prange(bpk.shape[0]):
                rows = min(NR, nc - jp * NR)
                pack_panels(bt, jc + jp * NR, rows, pc, kc, bpk[jp:jp + 1])
            for ib in prange((M + MC - 1) // MC):
                ic = ib * MC
                mc = min(MC, M - ic)
                apk = np.empty(((mc + MR - 1) // MR, depth, MR), dtype=c.dtype)
                pack_panels(a, ic, mc, pc, kc, apk)
                _multiply_block(apk, bpk, mc, nc, kc, c, ic, jc, pc == 0, bias)


gemm = njit_per_dtype(_SIGNATURES, cache=True, fastmath={"contract"},
                      parallel=True)(_gemm_loops)
# For the attention's stacks of small products, where the threads take whole products instead.
# Not cached on its own (two cached dispatchers of one function would share a cache index); the
# cached kernel that calls it stores its code.
gemm_one_thread = njit(fastmath={"contract"})(_gemm_loops)


@njit_per_dtype([f"void({t}[:, ::1], {t}[::1])" for t in FLOAT_TYPES], cache=True,
                parallel=True)
def _add_bias_rows(y, b):
    """y[n] += b for every row n, the rows split over the cores."""
    for n in prange(y.shape[0]):
        row = y[n]
        for j in range(row.shape[0]):
            row[j] += b[j]


PARALLEL_BIAS_BYTES = 8 << 20   # outputs up to this size get NumPy's one-core add


@register("add_bias")
def add_bias(y, b):
    """y += b in place like the reference, on every core for outputs over 8 MiB: the bias
    pass after np.matmul. NumPy's add runs on one core; for a large y, which no core's cache holds
    after the product, splitting the rows over the cores measured faster in a step (BERT-base
    inference 3.0 -> 2.8 s), while for smaller ones (BERT-tiny to -small) NumPy's add measured
    faster in a step, although the kernel alone is 3-5x faster on warm data."""
    if (not supported(y, b) or y.ndim != 2 or b.shape != y.shape[1:] or not y.flags.c_contiguous
            or y.nbytes <= PARALLEL_BIAS_BYTES):
        return NotImplemented
    _add_bias_rows(y, np.ascontiguousarray(b))


def matmul(a, b, bias=None):
    """a (M, K) @ b (K, N) (+ bias (N,)) into a new C-contiguous (M, N) array."""
    c = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)    # every element is written
    gemm(a, b, np.zeros(0, a.dtype) if bias is None else bias, c)
    return c


@register("linear_forward")
def linear_forward(x, w, b):
    """y = x @ w.T + b with the bias fused into the GEMM; returns (y, (x, w)) like the reference."""
    if not supported(x, w, b):
        return NotImplemented
    x2 = x.reshape(-1, x.shape[-1])                           # (N, in), a view when possible
    y = matmul(x2, w.T, b)                                    # (N, out)
    return y.reshape(x.shape[:-1] + (w.shape[0],)), (x, w)


@register("linear_backward")
def linear_backward(dy, cache):
    """dx = dy @ w, dw = dy^T @ x, db = sum_n dy, each GEMM reading the views it is given."""
    x, w = cache
    if not supported(dy, x, w):
        return NotImplemented
    x2 = x.reshape(-1, x.shape[-1])                           # (N, in)
    dy2 = dy.reshape(-1, dy.shape[-1])                        # (N, out)
    dx = matmul(dy2, w).reshape(x.shape)                      # y = x W^T   ->  dx = dy W
    dw = matmul(dy2.T, x2)                                    # y = x W^T   ->  dW = dy^T x
    db = dy2.sum(axis=0)                                      # y = ... + b ->  db = sum_n dy
    return dx, dw, db
