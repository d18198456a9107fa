"""Dynamic int8 Linear layer in Numba: quantize the rows of x, int8 x int8 product with int32
accumulators, dequantize and add the bias in the product's epilogue. The formulas are the
reference's, in bert_np/layers/quantized_linear.py; every result here is equal to the reference's,
bit for bit (integer sums are exact, and the float steps are the same operations in the same order,
with no fused multiply-add: the epilogue is compiled without fastmath).

The product (`_product`): C[n, o] = sum_k x_q[n, k] W_q[o, k], both operands read along k from
C-contiguous rows (W stays [out, in], no transposed copy).
  1. Offset. The quantization pass writes x_q + 128 as uint8 (0..254), and the product subtracts
     128 * sum_k W_q[o, k] afterwards: (x_q + 128) W_q^T - 128 W_q^T = x_q W_q^T, exactly. An
     unsigned operand is what lets the CPU's dot-product instructions serve (next point).
  2. The reduction over k is a plain loop on int32-widened values, accumulated in int32
     (`acc = int32(acc + int32(a) * int32(b))`; Numba would otherwise sum in int64, which LLVM
     vectorises as 64-bit multiplies). Checked in the assembly (tests/test_quantize.py): LLVM 22
     on AVX-512 VNNI vectorises it into vpmovzxbd / vpmovsxbd + vpdpwssd, the int16-pair dot
     product, on 16 int32 lanes: each lane's high int16 of the zero-extended x is 0, so the pair
     is one exact product, 16 multiply-adds per instruction into the accumulator.
     What it does not emit: with both operands signed (s8 x s8, widened to int16 or int32) it
     used vpmulld (a 2-uop 32-bit multiply, ~40% slower measured) for any tile larger than 1 x 1
     (a lone dot product gets vpmaddwd); and from no plain loop we wrote did it form vpdpbusd
     (u8 x s8, 64 multiply-adds per instruction), which ONNX Runtime's hand-written kernels use.
  3. Register tile: 4 rows of x by 4 rows of W at once, 16 independent sums, so each vector of x
     or W loaded is used 4 times.
  4. Cache blocking: the threads take 4-row tiles of x; OB rows of W (OB x K bytes, <= 1 MiB for
     K <= 4096) are shared by all row tiles before the next block, so W streams from L2.
  5. Edges: rows of x past N are padding rows of the quantized copy (never stored); a last
     partial tile of W repeats its last row and stores only the valid columns.
"""
import numpy as np
from numba import njit, prange

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported

MR = 4       # rows of x per tile
NR = 4       # rows of W per tile
OB = 256     # rows of W per cache block
QMAX = 127
OFFSET = 128   # x_q + 128: the unsigned operand (see the module docstring)
MAX_K = 66_000 # K * 255 * 127 < 2^31: the int32 sums cannot overflow


@njit(cache=True, inline="always")
def _quantize_row(x, q, qmax):
    """q = rint(x / s) + 128 as uint8, with s = max|x| / 127 (0 for an all-zero row, whose q is
    128); returns s. qmax is 127 in x's dtype, so each step is the reference's float operation."""
    amax = qmax - qmax                                        # 0 in x's dtype
    for k in range(x.shape[0]):
        amax = max(amax, abs(x[k]))
    s = amax / qmax
    if s > 0:
        for k in range(x.shape[0]):
            q[k] = np.uint8(min(max(np.rint(x[k] / s), -QMAX), QMAX) + OFFSET)
    else:
        for k in range(x.shape[0]):
            q[k] = np.uint8(OFFSET)
    return s


@njit_per_dtype([f"void({t}[:, ::1], uint8[:, ::1], {t}[::1], {t})" for t in FLOAT_TYPES],
                cache=True, parallel=True)
def _quantize_rows(x, q, s, qmax):
    """q[n], s[n] = quantized row n of x (+128) and its scale; rows of q past x's are padding."""
    for n in prange(q.shape[0]):
        if n < x.shape[0]:
            s[n] = _quantize_row(x[n], q[n], qmax)
        else:
            for k in range(q.shape[1]):
                q[n, k] = np.uint8(OFFSET)


@njit(cache=True, inline="always")
def _dot_tile(x0, x1, x2, x3, w0, w1, w2, w3, acc):
    """acc[i, j] = sum_k x_i[k] w_j[k]: 4 x 4 int32 sums of uint8 x int8 rows of one length."""
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = np.int32(0)
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = np.int32(0)
    for k in range(x0.shape[0]):
        a0, a1, a2, a3 = np.int32(x0[k]), np.int32(x1[k]), np.int32(x2[k]), np.int32(x3[k])
        b0, b1, b2, b3 = np.int32(w0[k]), np.int32(w1[k]), np.int32(w2[k]), np.int32(w3[k])
        c00 = np.int32(c00 + a0 * b0); c01 = np.int32(c01 + a0 * b1)  # noqa: E702
        c02 = np.int32(c02 + a0 * b2); c03 = np.int32(c03 + a0 * b3)  # noqa: E702
        c10 = np.int32(c10 + a1 * b0); c11 = np.int32(c11 + a1 * b1)  # noqa: E702
        c12 = np.int32(c12 + a1 * b2); c13 = np.int32(c13 + a1 * b3)  # noqa: E702
        c20 = np.int32(c20 + a2 * b0); c21 = np.int32(c21 + a2 * b1)  # noqa: E702
        c22 = np.int32(c22 + a2 * b2); c23 = np.int32(c23 + a2 * b3)  # noqa: E702
        c30 = np.int32(c30 + a3 * b0); c31 = np.int32(c31 + a3 * b1)  # noqa: E702
        c32 = np.int32(c32 + a3 * b2); c33 = np.int32(c33 + a3 * b3)  # noqa: E702
    acc[0, 0], acc[0, 1], acc[0, 2], acc[0, 3] = c00, c01, c02, c03
    acc[1, 0], acc[1, 1], acc[1, 2], acc[1, 3] = c10, c11, c12, c13
    acc[2, 0], acc[2, 1], acc[2, 2], acc[2, 3] = c20, c21, c22, c23
    acc[3, 0], acc[3, 1], acc[3, 2], acc[3, 3] = c30, c31, c32, c33


def _product_loops(xu, wq, w_sums, n_rows, acc_out, y, s_x, s_w, bias):
    """Every 4 x 4 tile of x_q + 128 (uint8, N padded to a multiple of 4, K) by W_q (O, K) int8,
    less 128 * w_sums[o] = 128 * sum_k W_q[o, k]: the int8 product x_q W_q^T, exactly. With y of 0
    rows the int32 sums go to acc_out (N, O); otherwise y (N, O) = (acc * s_x) * s_w (+ bias),
    each product rounded to y's dtype as the reference rounds it (no fused multiply-add)."""
    O = wq.shape[0]
    dequantize = y.shape[0] > 0
    for ob in range(0, O, OB):
        o_end = min(O, ob + OB)
        last = o_end - 1                                      # a partial tile repeats this row
        for t in prange(xu.shape[0] // MR):
            n0 = t * MR
            mr = min(MR, n_rows - n0)
            acc = np.empty((MR, NR), dtype=np.int32)
            tile = np.empty((MR, NR), dtype=s_x.dtype)
            x0, x1, x2, x3 = xu[n0], xu[n0 + 1], xu[n0 + 2], xu[n0 + 3]
            for o0 in range(ob, o_end, NR):
                nr = min(NR, o_end - o0)
                _dot_tile(x0, x1, x2, x3, wq[o0], wq[min(o0 + 1, last)], wq[min(o0 + 2, last)],
                          wq[min(o0 + 3, last)], acc)
                for i in range(mr):
                    for j in range(nr):
                        acc[i, j] -= OFFSET * w_sums[o0 + j]  # (x_q + 128) W_q - 128 W_q
                if not dequantize:
                    for i in range(mr):
                        for j in range(nr):
                            acc_out[n0 + i, o0 + j] = acc[i, j]
                    continue
                for i in range(mr):
                    for j in range(nr):
                        tile[i, j] = acc[i, j]                # int32 -> float, as astype does
                    sx = s_x[n0 + i]
                    for j in range(nr):
                        v = tile[i, j] * sx
                        v = v * s_w[o0 + j]
                        if bias.shape[0] > 0:
                            v = v + bias[o0 + j]
                        y[n0 + i, o0 + j] = v


_product = njit_per_dtype(
    [f"void(uint8[:, ::1], int8[:, ::1], int32[::1], int64, int32[:, ::1], {t}[:, ::1], "
     f"{t}[::1], {t}[::1], {t}[::1])" for t in FLOAT_TYPES],
    cache=True, parallel=True)(_product_loops)


def _padded_rows(n):
    return (n + MR - 1) // MR * MR


def _row_sums(w_q):
    return w_q.sum(axis=1, dtype=np.int32)                    # (O,), for the offset's correction


@register("quantize_rows")
def quantize_rows(x):
    """(x_q, s_x) like the reference, for float32/float64 x (N, K)."""
    if not supported(x) or x.ndim != 2:
        return NotImplemented
    x = np.ascontiguousarray(x)
    xu = np.empty(x.shape, np.uint8)
    s = np.empty(x.shape[0], x.dtype)
    _quantize_rows(x, xu, s, x.dtype.type(QMAX))
    return (xu ^ np.uint8(OFFSET)).view(np.int8), s           # x_q + 128 -> x_q (flip the top bit)


@register("int8_matmul")
def int8_matmul(x_q, w_q):
    """x_q (N, K) @ w_q^T (O, K) -> (N, O) int32, like the reference."""
    if (x_q.dtype != np.int8 or w_q.dtype != np.int8 or x_q.ndim != 2 or w_q.ndim != 2
            or x_q.shape[1] != w_q.shape[1] or x_q.shape[1] > MAX_K):
        return NotImplemented
    N = x_q.shape[0]
    out = np.empty((N, w_q.shape[0]), np.int32)
    if out.size:
        xu = np.full((_padded_rows(N), x_q.shape[1]), OFFSET, np.uint8)
        xu[:N] = x_q.view(np.uint8) ^ np.uint8(OFFSET)        # x_q + 128 (flip the top bit)
        none = np.zeros(0, np.float32)
        _product.dispatcher("float32")(xu, np.ascontiguousarray(w_q), _row_sums(w_q), N, out,
                                       np.zeros((0, 0), np.float32), none, none, none)
    return out


@register("int8_linear_forward")
def int8_linear_forward(x, w, b):
    """(y, (x, w)) like the reference: quantization, then product and epilogue, two parallel
    passes."""
    if (not supported(x, w.scale, b) or x.shape[-1] != w.shape[1] or w.shape[1] > MAX_K
            or (b is not None and b.shape != w.shape[:1])):
        return NotImplemented
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))     # (N, K)
    N = x2.shape[0]
    xu = np.empty((_padded_rows(N), x2.shape[1]), np.uint8)   # x_q + 128, padded rows
    s_x = np.empty(N, x2.dtype)
    y = np.empty((N, w.shape[0]), x2.dtype)
    if y.size:
        _quantize_rows(x2, xu, s_x, x2.dtype.type(QMAX))
        _product.dispatcher(y.dtype.name)(              # compiled for the float dtype of y
            xu, w.q, _row_sums(w.q), N, np.empty((0, 0), np.int32), y, s_x, w.scale,
            np.zeros(0, x2.dtype) if b is None else np.ascontiguousarray(b))
    return y.reshape(*x.shape[:-1], w.shape[0]), (x, w)


def compiled_asm(dtype="float32"):
    """The assembly of the product's loops for `dtype`, compiled on one thread (the code of a
    parallel kernel's loop body is not in its dispatcher's assembly, nor in a cached one's)."""
    serial = njit(_product.signatures[dtype])(_product_loops)
    return serial.inspect_asm(serial.signatures[0])
