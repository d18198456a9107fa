"""Dynamically quantized Linear layer (int8 inference), the reference of `bert_np.quantize_dynamic`.

Weights, once, at quantization time: symmetric int8 with one scale per output channel (row of W),
    s_w[o] = max_k |W[o, k]| / 127,      W_q[o, k] = rint(W[o, k] / s_w[o])  in [-127, 127]
Activations, at run time, one scale per row of x (per token):
    s_x[n] = max_k |x[n, k]| / 127,      x_q[n, k] = rint(x[n, k] / s_x[n])  in [-127, 127]
Product in integers, exact (|acc| <= K * 127^2 < 2^31 for K < 133,000), then dequantized:
    acc[n, o] = sum_k x_q[n, k] W_q[o, k]                  int32
    y[n, o]   = (acc[n, o] * s_x[n]) * s_w[o] + b[o]       float, in this order
A row whose values are all zero has scale 0 and quantizes to zeros (its output is the bias).
rint rounds half to even, as np.rint does; -128 is never used, so the range is symmetric and the
negation of a quantized value is still an int8.

Why symmetric int8 x int8 (and not unsigned activations with a zero point): it needs no
zero-point correction in the formula, and the kernels can still use the CPU's unsigned x signed
dot products exactly: kernels/int8.py stores x_q + 128 as unsigned bytes and subtracts
128 * sum_k W_q[o, k] (tdpbusd on AMX, vpdpbusd on AVX-512 VNNI; a portable loop elsewhere). AVX2's
vpmaddubsw sums its pairs into *saturating* int16 (255 * 127 * 2 > 32767), so it is not used. The
cost of symmetry: a row that is mostly positive (GELU's output) uses about half of the 255 levels;
with a scale per row instead of per tensor that costs little (tests/test_quantize.py measures the
drift).

The layer is inference only: an Int8Weight refuses to act as a float array, so a backward pass
cannot run through it by accident.
"""
from __future__ import annotations

import numpy as np

from ..kernels import accelerated

QMAX = 127


class Int8Weight:
    """A Linear weight W (out, in) stored as int8 `q` (out, in) with a float `scale` (out,) per row:
    W ~ q * scale[:, None]. Has `shape` and `dtype` (int8) like an array, so a float kernel that
    checks dtypes declines it; `dequantize()` gives the float approximation."""

    __slots__ = ("q", "scale")

    def __init__(self, q: np.ndarray, scale: np.ndarray):
        if q.dtype != np.int8 or q.ndim != 2 or scale.shape != q.shape[:1]:
            raise ValueError(f"Int8Weight needs int8 q (out, in) and scale (out,), got "
                             f"{q.dtype}{q.shape} and {scale.dtype}{scale.shape}")
        self.q, self.scale = np.ascontiguousarray(q), np.ascontiguousarray(scale)

    shape = property(lambda self: self.q.shape)
    size = property(lambda self: self.q.size)
    dtype = property(lambda self: self.q.dtype)

    def dequantize(self) -> np.ndarray:
        return self.q * self.scale[:, None]                   # (out, in) in the scale's dtype

    def __array__(self, *args, **kwargs):
        raise TypeError("an int8 quantized weight is for inference only and is not a float array "
                        "(use .dequantize() for its float approximation); training and gradients "
                        "need the float model")

    def __repr__(self):
        return f"Int8Weight(shape={self.shape}, scale dtype={self.scale.dtype})"


def quantize_weight(w: np.ndarray) -> Int8Weight:
    """W (out, in) float -> Int8Weight, symmetric, one scale per output channel."""
    scale = np.abs(w).max(axis=1) / w.dtype.type(QMAX)                      # (out,)
    safe = np.where(scale > 0, scale, 1).astype(w.dtype)                    # zero row: q = 0
    q = np.clip(np.rint(w / safe[:, None]), -QMAX, QMAX).astype(np.int8)    # (out, in)
    return Int8Weight(q, scale)


@accelerated("quantize_rows")
def quantize_rows(x):
    """x (N, K) float -> (x_q (N, K) int8, s_x (N,)): symmetric, one scale per row."""
    scale = np.abs(x).max(axis=1) / x.dtype.type(QMAX)                      # (N,)
    safe = np.where(scale > 0, scale, 1).astype(x.dtype)                    # zero row: q = 0
    q = np.clip(np.rint(x / safe[:, None]), -QMAX, QMAX).astype(np.int8)    # (N, K)
    return q, scale


@accelerated("int8_matmul")
def int8_matmul(x_q, w_q):
    """acc = x_q @ w_q^T in int32: x_q (N, K) int8, w_q (O, K) int8 -> (N, O) int32, exact."""
    return x_q.astype(np.int32) @ w_q.T.astype(np.int32)


@accelerated("int8_linear_forward")
def int8_linear_forward(x, w: Int8Weight, b):
    """y = dequantize(quantize(x) W_q^T) + b for x (..., K); returns (y, (x, w)) like
    linear_forward. The formula is in the module docstring."""
    x2 = x.reshape(-1, x.shape[-1])                           # (N, K)
    x_q, s_x = quantize_rows(x2)                              # (N, K) int8, (N,)
    acc = int8_matmul(x_q, w.q)                               # (N, O) int32
    y = acc.astype(x.dtype) * s_x[:, None]                    # (acc * s_x) ...
    y *= w.scale.astype(x.dtype)                              # ... * s_w
    if b is not None:
        y += b
    return y.reshape(*x.shape[:-1], w.shape[0]), (x, w)
