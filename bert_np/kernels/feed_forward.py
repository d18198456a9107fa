"""The feed-forward sublayer of an int8 model in inference, `GELU(x Wi^T + bi) Wo^T + bo`, in two
products whose first one's epilogue makes the second one's quantized input.

The reference (layers/activations.py `feed_forward`, with the int8 Linear of
layers/quantized_linear.py) writes z = x Wi^T + bi (N x I floats), reads it for the GELU, writes
GELU(z), reads that again to quantize it for the second product: four passes over the widest
activations of the layer (12 MB each for MiniLM at B=32, T=64). Here a job of the first product
covers FF_ROWS (32) rows and every channel (kernels/int8.py's `row_block_sums`, AMX or VNNI), and
its epilogue takes each row in L1 through the dequantization, the GELU (kernels/gelu.py's
`gelu_row`) and the quantization: only the uint8 rows are written, N x I bytes instead of four
passes over N x I floats. Each step is the same operations as its pass's, so the result equals
the three passes' bit for bit. The second product is kernels/int8.py's, on the process's path.

The operation is the sublayer, whatever its weights: this module registers `feed_forward`, and
declines (NotImplemented, the dispatcher runs the reference) float weights, training (a cache is
kept), activations other than GELU and the portable path.
"""
import numpy as np
from numba import prange

from . import register
from .common import FLOAT_TYPES, njit_per_dtype, supported
from .gelu import gelu_constants, gelu_row
from .int8 import (FF_ROWS, MAX_K, OFFSET, PANEL, QMAX, TILE_CONFIG, active_path, dequantize_row,
                   is_int8_weight, packed_weight, padded_columns, quantize_into, quantize_row,
                   row_block_sums, run_product)


def _feed_forward_in_loops(x8, x32, wp, start, n_rows, n_cols, s_x, s_w, bias, gu, s_g, consts,
                           qmax, amx, config):
    """gu[n], s_g[n] = quantize_rows(GELU((x_q W_q^T)[n] * s_x[n] * s_w + bias)) for every row n of
    the feed-forward's first product (n_cols channels), + 128 as the products take it: a job is
    FF_ROWS rows by every panel (`row_block_sums`); then, row by row in L1, the dequantization of
    `_store_job`, the GELU of kernels/gelu.py (`gelu_row`) and the quantization of
    `quantize_into` (each the same operations, so gu and s_g equal those three passes' results).
    Rows of gu past n_rows, and its columns past n_cols, hold 128 (x_q = 0)."""
    for job in prange(x8.shape[0] // FF_ROWS):
        r0 = job * FF_ROWS
        acc = np.empty((FF_ROWS, wp.shape[0] * PANEL), dtype=np.int32)
        row_block_sums(x8, x32, wp, start, r0, acc, amx, config)
        z = np.empty(n_cols, dtype=s_x.dtype)
        g = np.empty(n_cols, dtype=s_x.dtype)
        for i in range(FF_ROWS):
            q = gu[r0 + i]
            if r0 + i < n_rows:
                dequantize_row(acc[i], s_x[r0 + i], s_w, bias, z)
                gelu_row(z, g, consts)
                s_g[r0 + i] = quantize_row(g, q[:n_cols], qmax)
                for k in range(n_cols, q.shape[0]):
                    q[k] = np.uint8(OFFSET)
            else:
                for k in range(q.shape[0]):
                    q[k] = np.uint8(OFFSET)


_feed_forward_in = njit_per_dtype(
    [f"void(uint8[:, ::1], int32[:, ::1], int32[:, :, ::1], int32[:, ::1], int64, int64, {t}[::1], "
     f"{t}[::1], {t}[::1], uint8[:, ::1], {t}[::1], UniTuple({t}, 4), {t}, boolean, uint8[::1])"
     for t in FLOAT_TYPES], cache=True, parallel=True)(_feed_forward_in_loops)


@register("feed_forward")
def feed_forward(x, wi, bi, wo, bo, act, *, keep_cache=True):
    """(y, None) like the reference, in inference (keep_cache off) with int8 weights and GELU, on
    the AMX or VNNI path: x is quantized, the first product's epilogue makes the second's
    quantized input (`_feed_forward_in`), the second product runs as int8_linear_forward's."""
    if (keep_cache or act != "gelu" or bi is None or active_path() == "portable"
            or not (is_int8_weight(wi) and is_int8_weight(wo))
            or not supported(x, wi.scale, bi, wo.scale, bo) or x.size == 0
            or x.shape[-1] != wi.shape[1] or wo.shape[1] != wi.shape[0] or 0 in wo.shape
            or max(wi.shape[1], wo.shape[1]) > MAX_K or bi.shape != wi.shape[:1]
            or (bo is not None and bo.shape != wo.shape[:1])):
        return NotImplemented
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))     # (N, K)
    N, dtype = x2.shape[0], x2.dtype
    rows = (N + FF_ROWS - 1) // FF_ROWS * FF_ROWS             # a multiple of every path's rows
    xu = np.empty((rows, padded_columns(x2.shape[1])), np.uint8)         # x_q + 128
    s_x = np.empty(N, dtype)
    quantize_into(x2, xu, s_x, dtype.type(QMAX))
    gu = np.empty((rows, padded_columns(wi.shape[0])), np.uint8)         # GELU(z)_q + 128
    s_g = np.empty(N, dtype)
    wp, _, start = packed_weight(wi.q)
    _feed_forward_in.dispatcher(dtype.name)(
        xu, xu.view(np.int32), wp, start, N, wi.shape[0], s_x, wi.scale, np.ascontiguousarray(bi),
        gu, s_g, gelu_constants(dtype), dtype.type(QMAX), active_path() == "amx", TILE_CONFIG)
    y = np.empty((N, wo.shape[0]), dtype)
    run_product(gu, wo, N, np.empty((0, 0), np.int32), y, s_g, wo.scale,
                 np.zeros(0, dtype) if bo is None else np.ascontiguousarray(bo))
    return y.reshape(*x.shape[:-1], wo.shape[0]), None
