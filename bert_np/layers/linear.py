"""Linear (fully connected) layer, weights stored [out, in] as in PyTorch and Hugging Face.

forward:   y = x W^T + b                        x (N, in)  W (out, in)  b (out,)  y (N, out)
backward:  dx = dy W        dW = dy^T x        db = sum_n dy
Any leading dimensions of x (B, T, ...) are folded into N.
A weight quantized by bert_np.quantize_dynamic (an Int8Weight) runs the int8 layer of
quantized_linear.py instead (inference only).
With b=None the layer computes x W^T only (db = sum_n dy is still returned).
"""
import numpy as np

from ..kernels import accelerated
from .quantized_linear import Int8Weight, int8_linear_forward


@accelerated("add_bias")
def add_bias(y, b):
    """y += b for every row of y (N, out), in place."""
    y += b


@accelerated("linear_forward")
def linear_forward(x, w, b):
    """y = x @ w.T + b (b None: no bias); returns (y, cache) with cache = (x, w)."""
    if isinstance(w, Int8Weight):                             # a model from quantize_dynamic
        return int8_linear_forward(x, w, b)
    x2 = x.reshape(-1, x.shape[-1])                           # (N, in): one 2-D GEMM, not a batch
    y = np.matmul(x2, w.T)                                    # (N, out)
    if b is not None:
        add_bias(y, b)
    return y.reshape(*x.shape[:-1], w.shape[0]), (x, w)


@accelerated("linear_backward")
def linear_backward(dy, cache):
    """Returns (dx, dw, db) for y = x @ w.T + b."""
    x, w = cache
    x2 = x.reshape(-1, x.shape[-1])                           # (N, in)
    dy2 = dy.reshape(-1, dy.shape[-1])                        # (N, out)
    dx = np.matmul(dy2, w).reshape(x.shape)                   # y = x W^T   ->  dx = dy W
    dw = np.matmul(dy2.T, x2)                                 # y = x W^T   ->  dW = dy^T x
    db = dy2.sum(axis=0)                                      # y = ... + b ->  db = sum_n dy
    return dx, dw, db
