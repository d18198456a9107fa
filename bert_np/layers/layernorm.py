"""Layer normalisation over the last axis (biased variance, as PyTorch and the BERT paper).

forward:   mu = mean(x)   var = mean((x - mu)^2)   rstd = 1 / sqrt(var + eps)
           xhat = (x - mu) * rstd                   y = w * xhat + b
backward:  dxhat = dy * w
           dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
           dw = sum over rows of dy * xhat          db = sum over rows of dy
The backward formula is derived step by step in notebooks/03_layernorm_gelu.ipynb.
"""
import numpy as np

from ..kernels import accelerated


@accelerated("layernorm_forward")
def layernorm_forward(x, w, b, eps):
    """Returns (y, cache) with cache = (xhat, rstd, w); x (..., H), w and b (H,)."""
    mu = x.mean(axis=-1, keepdims=True)                       # (..., 1)
    xc = x - mu                                               # (..., H)
    var = (xc * xc).mean(axis=-1, keepdims=True)              # (..., 1) biased variance
    rstd = 1.0 / np.sqrt(var + eps)                           # (..., 1)
    xhat = xc * rstd                                          # (..., H)
    y = xhat * w + b                                          # (..., H)
    return y, (xhat, rstd, w)


@accelerated("add_layernorm_forward")
def add_layernorm_forward(x, residual, w, b, eps):
    """LayerNorm(x + residual), the transformer's "Add & Norm". Returns (y, cache) exactly as
    layernorm_forward on the sum does, so layernorm_backward is its backward: the gradient of the
    sum is the gradient of both x and residual. (The kernel forms the sum row by row and never
    stores it as an array of its own.)"""
    return layernorm_forward(x + residual, w, b, eps)


@accelerated("layernorm_backward")
def layernorm_backward(dy, cache):
    """Returns (dx, dw, db)."""
    xhat, rstd, w = cache
    H = xhat.shape[-1]
    dw = (dy * xhat).reshape(-1, H).sum(axis=0)               # y = w * xhat + b  ->  dw
    db = dy.reshape(-1, H).sum(axis=0)                        # y = w * xhat + b  ->  db
    dxhat = dy * w                                            # y = w * xhat      ->  dxhat
    mean_dxhat = dxhat.mean(axis=-1, keepdims=True)           # (..., 1)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=-1, keepdims=True)
    dx = rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)  # through xhat = (x - mu) * rstd
    return dx, dw, db
